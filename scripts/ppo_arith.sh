#!/usr/bin/env bash
# PPO with a critic (GAE) on procedural arithmetic. Extra args are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m rlinf.run --config configs/ppo_arith.yaml "$@"
