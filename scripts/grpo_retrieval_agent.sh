#!/usr/bin/env bash
# The retrieval agent from nothing, both stages: the corpus of the facts knowledge base and worked
# demonstrations (`python -m rlinf.envs.text.facts corpus / demos`) into a temporary directory, (1) an SFT
# warm-start on the demonstrations (configs/sft_retrieval_demos.yaml), (2) GRPO with the retrieve tool over
# the corpus from its checkpoint (configs/grpo_retrieval_agent.yaml, env.corpus set here). Arguments are
# overrides of stage 2; `runner.output_dir=DIR` puts the RL run (and its summary.json) in DIR and the
# warm-start in DIR-warmstart (default DIR: runs/grpo_retrieval_agent). SFT_ARGS="key=value ..." overrides
# stage 1. The corpus is deleted on exit: evaluate a checkpoint with env.corpus=... of a corpus written
# again (`python -m rlinf.envs.text.facts corpus --out FILE`, same data.seed).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="runs/grpo_retrieval_agent"
for arg in "$@"; do
    case "$arg" in runner.output_dir=*) OUT="${arg#runner.output_dir=}" ;; esac
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m rlinf.envs.text.facts corpus --out "$WORK/corpus.jsonl"
.venv/bin/python -m rlinf.envs.text.facts demos --corpus "$WORK/corpus.jsonl" --out "$WORK/demos.jsonl" --num 1000
# shellcheck disable=SC2086
.venv/bin/python -m rlinf.run --config configs/sft_retrieval_demos.yaml "data.path=$WORK/demos.jsonl" \
    "runner.output_dir=$OUT-warmstart" ${SFT_ARGS:-}
.venv/bin/python -m rlinf.run --config configs/grpo_retrieval_agent.yaml "actor.init_checkpoint=$OUT-warmstart" \
    "env.corpus=$WORK/corpus.jsonl" "runner.output_dir=$OUT" "$@"
