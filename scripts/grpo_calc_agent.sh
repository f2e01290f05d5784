#!/usr/bin/env bash
# The calculator agent from nothing, both stages: (1) an SFT warm-start on format demonstrations
# (configs/sft_calc_demos.yaml; demos from `python -m rlinf.envs.text.calc demos`), (2) GRPO in the
# calculator environment from its checkpoint (configs/grpo_calc_agent.yaml). Arguments are overrides of
# stage 2; `runner.output_dir=DIR` puts the RL run (and its summary.json) in DIR and the warm-start in
# DIR-warmstart (default DIR: runs/grpo_calc_agent). SFT_ARGS="key=value ..." overrides stage 1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="runs/grpo_calc_agent"
for arg in "$@"; do
    case "$arg" in runner.output_dir=*) OUT="${arg#runner.output_dir=}" ;; esac
done
DEMOS="$(mktemp -d)"
trap 'rm -rf "$DEMOS"' EXIT
.venv/bin/python -m rlinf.envs.text.calc demos --out "$DEMOS/demos.jsonl" --num 56
# shellcheck disable=SC2086
.venv/bin/python -m rlinf.run --config configs/sft_calc_demos.yaml "data.path=$DEMOS/demos.jsonl" \
    "runner.output_dir=$OUT-warmstart" ${SFT_ARGS:-}
.venv/bin/python -m rlinf.run --config configs/grpo_calc_agent.yaml "actor.init_checkpoint=$OUT-warmstart" \
    "runner.output_dir=$OUT" "$@"
