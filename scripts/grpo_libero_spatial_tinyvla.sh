#!/usr/bin/env bash
# GRPO on LIBERO-Spatial (one task) from camera images with the tiny VLA (action tokens), CPU-sized.
# Usage: bash scripts/grpo_libero_spatial_tinyvla.sh [key=value ...]   e.g. runner.max_steps=3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/grpo_libero_spatial_tinyvla.yaml "$@"
