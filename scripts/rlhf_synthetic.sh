#!/usr/bin/env bash
# RLHF on the synthetic preference task, both stages: (1) train a reward model on noisily labelled pairs
# (configs/rm_synthetic.yaml), (2) four-model PPO against it (configs/ppo_rlhf_synthetic.yaml), measured
# by the hidden gold reward. Extra args are overrides of stage 2; RM_ARGS="key=value ..." overrides
# stage 1. Runs go to $OUT (default runs/rlhf_synthetic): $OUT/rm and $OUT/ppo.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/rlhf_synthetic}"
# shellcheck disable=SC2086
.venv/bin/python -m rlinf.run --config configs/rm_synthetic.yaml "runner.output_dir=$OUT/rm" ${RM_ARGS:-}
RM_DIR="$(ls -d "$OUT"/rm/checkpoints/step_*/reward_model | sort | tail -n 1)"
exec .venv/bin/python -m rlinf.run --config configs/ppo_rlhf_synthetic.yaml "runner.output_dir=$OUT/ppo" \
    "reward.model.path=$RM_DIR" "$@"
