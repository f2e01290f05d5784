#!/usr/bin/env bash
# PPO on ManiSkill3 PushCube-v1 from camera images with the tiny VLA (action chunks), CPU-sized.
# Usage: bash scripts/ppo_maniskill_tinyvla.sh [key=value ...]   e.g. runner.max_steps=5
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/ppo_maniskill_tinyvla.yaml "$@"
