#!/usr/bin/env bash
# PPO on gymnasium CartPole-v1 with an MLP actor-critic (env, rollout and actor workers on Ray).
# Usage: bash scripts/ppo_cartpole.sh [key=value ...]   e.g. runner.max_steps=50
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/ppo_cartpole_mlp.yaml "$@"
