#!/usr/bin/env bash
# GPU benchmark kit (<= 10 minutes on one GPU): weight sync, generation speed, ManiSkill GPU collection.
#   bash bench/gpu_suite.sh [OUT.json] [more options of `python -m bench.gpu_suite`]
# Writes OUT.json (default gpu_suite.json) with every figure and prints `RESULT {json}` last.
# Without CUDA: one line on stderr and exit code 2. See the docstring of bench/gpu_suite.py for the parts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-gpu_suite.json}"
shift || true
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout --kill-after=30 600 "$PY" -m bench.gpu_suite --out "$OUT" "$@"
