#!/usr/bin/env bash
# Asynchronous PPO on gymnasium CartPole-v1 (MLP actor-critic): env + rollout on device 1 collect the
# next batch while the actor trains on device 0; staleness <= 1 with decoupled PPO + truncated IS.
# Usage: bash scripts/ppo_cartpole_mlp_async.sh [key=value ...]   e.g. runner.max_steps=50
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/ppo_cartpole_mlp_async.yaml "$@"
