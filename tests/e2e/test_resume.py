"""Checkpoint / resume: a run resumed from its step-3 checkpoint logs the same metrics at steps 4-6
as an uninterrupted run with the same seed."""

import json

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.runners.components import components_for
from rlinf.runners.runner import run

pytestmark = pytest.mark.timeout(400)

COMMON = ["runner.progress_bar=false", "cluster.num_devices=2", "runner.log_interval=1", "data.batch_size=8", "algorithm.group_size=8",
          "runner.save_interval=3", "data.eval_size=4", "runner.eval_interval=0"]


def _run(out, max_steps, resume=None):
    cfg = load_config("configs/grpo_arith.yaml", [*COMMON, f"runner.max_steps={max_steps}",
                                                  f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    return run(cfg, placement, "grpo_arith", resume=resume)


def _train_rows(path):
    rows = [json.loads(line) for line in open(path / "metrics.jsonl")]
    return {r["step"]: r for r in rows if "actor/pg_loss" in r}


def test_resume_reproduces_uninterrupted_metrics(cluster, tmp_path):
    _run(tmp_path / "full", 6)
    _run(tmp_path / "cut", 3)
    summary = _run(tmp_path / "cut", 6, resume=str(tmp_path / "cut"))
    assert summary["resumed_from_step"] == 3
    full, resumed = _train_rows(tmp_path / "full"), _train_rows(tmp_path / "cut")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert any(full[s]["actor/grad_norm"] > 0 for s in (4, 5, 6)), "test needs non-trivial updates"
    for step in (4, 5, 6):
        for key, value in full[step].items():
            if not key.startswith(("time/", "throughput/")):
                assert resumed[step][key] == value, (step, key)
    assert (tmp_path / "cut" / "checkpoints" / "step_000006" / "COMPLETE").exists()


def test_resume_without_checkpoint_is_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no complete checkpoint"):
        _run(tmp_path / "x", 2, resume=str(tmp_path / "empty"))
