#!/usr/bin/env bash
# PPO on ManiSkill3 PushCube-v1 (state observations, physx CPU sim) with an MLP actor-critic.
# Usage: bash scripts/ppo_maniskill_pushcube_mlp.sh [key=value ...]   e.g. runner.max_steps=50
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/ppo_maniskill_pushcube_mlp.yaml "$@"
