#!/usr/bin/env bash
# GRPO on procedural arithmetic with a tiny model trained from scratch. Extra args are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m rlinf.run --config configs/grpo_arith.yaml "$@"
