#!/usr/bin/env bash
# Evaluate a CartPole checkpoint: greedy episodes with fixed seeds, eval_summary.json and mp4 videos.
# Usage: bash scripts/eval_cartpole.sh RUN_OR_CHECKPOINT_DIR [key=value ...]
#   e.g. bash scripts/eval_cartpole.sh runs/ppo_cartpole_mlp-20250101-120000 eval.num_episodes=50
# Train with checkpoints first: bash scripts/ppo_cartpole.sh runner.save_interval=50
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/eval_cartpole.sh RUN_OR_CHECKPOINT_DIR [key=value ...]" >&2
  exit 2
fi
CKPT=$1
shift
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.eval --config configs/ppo_cartpole_mlp.yaml --checkpoint "$CKPT" \
  eval.num_episodes=20 eval.video=true eval.num_videos=2 "$@"
