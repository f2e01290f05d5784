"""Async schedule: staleness 0 reproduces the sync schedule bit for bit; staleness 1 stays within bound."""

import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.runners.components import components_for
from rlinf.runners.runner import run

pytestmark = pytest.mark.timeout(400)

COMMON = ["runner.progress_bar=false", "cluster.num_devices=2", "runner.log_interval=1", "data.batch_size=8", "algorithm.group_size=8",
          "runner.max_steps=5", "data.eval_size=4", "runner.eval_interval=0"]


def _rows(config, out, *overrides):
    cfg = load_config(config, [*COMMON, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run(cfg, placement, "x")
    return {r["step"]: r for r in map(json.loads, open(out / "metrics.jsonl")) if "actor/pg_loss" in r}, summary


def test_async_with_zero_staleness_equals_sync(cluster, tmp_path):
    sync, _ = _rows("configs/grpo_arith.yaml", tmp_path / "sync")
    asyn, _ = _rows("configs/grpo_arith.yaml", tmp_path / "async", "runner.schedule=async")
    assert sorted(asyn) == [1, 2, 3, 4, 5]
    for step, row in sync.items():
        for key, value in row.items():
            if not key.startswith(("time/", "throughput/")):
                assert asyn[step][key] == value, (step, key)


def test_async_staleness_one_bounded_and_nothing_lost(cluster, tmp_path):
    rows, summary = _rows("configs/grpo_arith_async.yaml", tmp_path / "a1")
    assert sorted(rows) == [1, 2, 3, 4, 5]  # one batch consumed per step, none dropped
    stale = [r["staleness/max"] for r in rows.values()]
    assert max(stale) <= 1
    assert all(r["staleness/channel"] <= 1 for r in rows.values())
    assert all(r["samples"] == 64 for r in rows.values())
    assert all("offpolicy/is_ratio_mean" in r for r in rows.values())
    schedule = summary["schedule"]
    assert schedule["name"] == "async" and schedule["bound"] == 1
    assert sum(schedule["staleness_histogram"].values()) == 5  # every consumed batch counted once
    assert all(int(k) <= 1 for k in schedule["staleness_histogram"])
