"""Async embodied PPO (CartPole MLP, disaggregated): staleness 0 reproduces the sync schedule bit for
bit; staleness 1 stays within its bound, consumes every batch once and reports the IS statistics."""

import json

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.runners.components import components_for
from rlinf.runners.embodied import EmbodiedWorkflow
from rlinf.runners.runner import run

pytestmark = pytest.mark.timeout(300)

CONFIG = "configs/ppo_cartpole_mlp_async.yaml"
TINY = ["runner.max_steps=4", "env.num_envs=4", "env.rollout_steps=16", "actor.global_batch_size=32",
        "env.eval_episodes=2", "env.max_episode_steps=30", "runner.progress_bar=false", "runner.log_interval=1",
        "runner.plots=false"]


def _rows(out, *overrides):
    cfg = load_config(CONFIG, [*TINY, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run(cfg, placement, "x")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "actor/pg_loss" in r}, summary


def test_async_zero_staleness_equals_sync(cluster, tmp_path):
    # Same config (decoupled PPO + TIS on in both), only the schedule differs.
    common = ["algorithm.max_staleness=0"]
    sync, _ = _rows(tmp_path / "sync", *common, "runner.schedule=sync")
    asyn, summary = _rows(tmp_path / "async", *common, "runner.schedule=async")
    assert summary["schedule"]["name"] == "async" and sorted(asyn) == [1, 2, 3, 4]
    for step, row in sync.items():
        assert "offpolicy/is_ratio_mean" in row
        for key, value in row.items():
            if not key.startswith(("time/", "throughput/", "actor/update_time_s")):
                assert asyn[step][key] == value, (step, key)
    assert summary["eval"]["final"] == json.loads((tmp_path / "sync" / "summary.json").read_text())["eval"]["final"]


def test_async_staleness_one_bounded_and_nothing_lost(cluster, tmp_path):
    rows, summary = _rows(tmp_path / "a1", "runner.max_steps=5")
    assert sorted(rows) == [1, 2, 3, 4, 5]  # one batch consumed per step, none dropped
    assert [r["weights/version"] for r in rows.values()] == [1, 2, 3, 4, 5]
    assert all(r["samples"] == 4 * 16 for r in rows.values())
    assert all(0 <= r["staleness/max"] <= 1 and r["staleness/channel"] <= 1 for r in rows.values())
    for r in rows.values():  # truncated IS behaviour -> proximal
        assert 0 < r["offpolicy/is_ratio_min"] <= r["offpolicy/is_ratio_mean"] <= r["offpolicy/is_ratio_max"]
        assert 0 <= r["offpolicy/is_clipped_frac"] <= 1 and 0 <= r["actor/clipfrac"] <= 1
    # a fresh batch (staleness 0) has proximal == behaviour up to float error
    fresh = [r for r in rows.values() if r["staleness/max"] == 0]
    assert fresh and all(abs(r["offpolicy/is_ratio_mean"] - 1) < 1e-4 for r in fresh)
    schedule = summary["schedule"]
    assert schedule["name"] == "async" and schedule["bound"] == 1
    assert sum(schedule["staleness_histogram"].values()) == 5  # every consumed batch counted once
    assert all(int(k) <= 1 for k in schedule["staleness_histogram"])
    assert summary["eval"]["final"]["num_episodes"] == 2
    # weights went through the engine, staged: sent at publish, switched between act calls
    trace = json.loads((tmp_path / "a1" / "timeline.json").read_text())["traceEvents"]
    assert {"send_weights", "apply_weights"} <= {e["name"] for e in trace if e["ph"] == "X"}


def test_async_with_checkpoints_is_rejected(tmp_path):
    cfg = load_config(CONFIG, [*TINY, "runner.save_interval=2", f"runner.output_dir={tmp_path}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    with pytest.raises(InputError) as e:
        EmbodiedWorkflow(cfg, placement, None)
    assert e.value.key == "runner.save_interval"
