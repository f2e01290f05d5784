"""Async embodied PPO (CartPole MLP, disaggregated): staleness 0 reproduces the sync schedule bit for
bit; staleness 1 stays within its bound, consumes every batch once and reports the IS statistics.
Both checkpoint mid-run and resume: the producer is quiesced (env state, observations and rollout RNG
are those after its last batch) and its queued batches are saved and re-queued on resume, so staleness
0 resumes bit-identical to the sync run and staleness 1 trains the saved batches bit-identically."""

import json
import shutil

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.runners import checkpoints
from rlinf.workflows import components_for
from rlinf.run import run_training

pytestmark = pytest.mark.timeout(300)

CONFIG = "configs/ppo_cartpole_mlp_async.yaml"
TINY = ["runner.max_steps=4", "env.num_envs=4", "env.rollout_steps=16", "actor.global_batch_size=32",
        "env.eval_episodes=2", "env.max_episode_steps=30", "runner.progress_bar=false", "runner.log_interval=1",
        "runner.plots=false"]


def _rows(out, *overrides, resume=None):
    cfg = load_config(CONFIG, [*TINY, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "x", resume=resume)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "actor/pg_loss" in r}, summary


def _resume_cut(run_dir, out, step, *overrides):
    """Resume from a copy of `run_dir` as a run killed right after its step-`step` checkpoint left it."""
    shutil.copytree(run_dir, out)
    for ckpt in (out / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    rows, summary = _rows(out, *overrides, resume=str(out))
    assert summary["resumed_from_step"] == step
    return rows, summary


def _same(expected, got, steps):
    for step in steps:
        for key, value in expected[step].items():
            if not key.startswith(("time/", "throughput/", "actor/update_time_s")):
                assert got[step][key] == value, (step, key)


def _accounting(schedule, consumed):
    dropped = sum(v for k, v in schedule.items() if k.startswith("dropped/"))
    assert schedule["consumed"] == consumed and schedule["produced"] == consumed + dropped


def test_async_zero_staleness_equals_sync(cluster, tmp_path):
    # Same config (decoupled PPO + TIS on in both), only the schedule differs.
    common = ["algorithm.max_staleness=0"]
    sync, _ = _rows(tmp_path / "sync", *common, "runner.schedule=sync")
    asyn, summary = _rows(tmp_path / "async", *common, "runner.schedule=async", "runner.save_interval=2")
    assert summary["schedule"]["name"] == "async" and sorted(asyn) == [1, 2, 3, 4]
    assert all("offpolicy/is_ratio_mean" in row for row in sync.values())
    _same(sync, asyn, sync)  # the checkpoint (the producer quiesced for it) changes nothing
    sync_final = json.loads((tmp_path / "sync" / "summary.json").read_text())["eval"]["final"]
    assert summary["eval"]["final"] == sync_final
    # s = 0: at the step-2 checkpoint the producer has made exactly batch 2, with weights of version 2
    ckpt = tmp_path / "async" / "checkpoints" / "step_000002"
    state = checkpoints.load_state(ckpt / "schedule.pt")
    assert state["next_step"] == 3 and [(b["step"], b["version"]) for b in state["batches"]] == [(2, 2)]
    assert {"workflow.pt", "env"} <= {p.name for p in ckpt.iterdir()}
    resumed, summary = _resume_cut(tmp_path / "async", tmp_path / "cut", 2, *common, "runner.schedule=async",
                                   "runner.save_interval=2")
    assert sorted(resumed) == [1, 2, 3, 4]
    _same(sync, resumed, (3, 4))  # bit-identical to the uninterrupted run (and to sync)
    assert summary["eval"]["final"] == sync_final
    assert summary["schedule"]["restored"] == 1
    _accounting(summary["schedule"], 2)


def test_async_staleness_one_bounded_and_nothing_lost(cluster, tmp_path):
    rows, summary = _rows(tmp_path / "a1", "runner.max_steps=5", "runner.save_interval=2")
    assert sorted(rows) == [1, 2, 3, 4, 5]  # one batch consumed per step, none dropped
    assert [r["weights/version"] for r in rows.values()] == [1, 2, 3, 4, 5]
    assert all(r["samples"] == 4 * 16 for r in rows.values())
    assert all(r["staleness/max"] in (0, 1) and r["staleness/channel"] in (0, 1) for r in rows.values())
    for r in rows.values():  # truncated IS behaviour -> proximal
        assert 0 < r["offpolicy/is_ratio_min"] <= r["offpolicy/is_ratio_mean"] <= r["offpolicy/is_ratio_max"]
    # a fresh batch (staleness 0) has proximal == behaviour up to float error: nothing reaches the cap
    fresh = [r for r in rows.values() if r["staleness/max"] == 0]
    assert fresh and all(abs(r["offpolicy/is_ratio_mean"] - 1) < 1e-4 for r in fresh)
    assert all(r["offpolicy/is_clipped_frac"] == 0 for r in fresh)
    schedule = summary["schedule"]
    assert schedule["name"] == "async" and schedule["bound"] == 1
    assert sum(schedule["staleness_histogram"].values()) == 5  # every consumed batch counted once
    assert set(schedule["staleness_histogram"]) <= {"0", "1"}
    assert schedule["staleness_histogram"].get("1", 0) >= 1  # the bound was reached, not merely respected
    assert summary["eval"]["final"]["num_episodes"] == 2
    # weights went through the engine, staged: sent at publish, switched between act calls
    trace = json.loads((tmp_path / "a1" / "timeline.json").read_text())["traceEvents"]
    assert {"send_weights", "apply_weights"} <= {e["name"] for e in trace if e["ph"] == "X"}
    _accounting(schedule, 5)
    # At the step-2 checkpoint (version 2 published) the producer had made every batch that version
    # admits (steps 2 and 3) and continues at step 4.
    state = checkpoints.load_state(tmp_path / "a1" / "checkpoints" / "step_000002" / "schedule.pt")
    assert state["next_step"] == 4 and [b["step"] for b in state["batches"]] == [2, 3]
    assert state["batches"][0]["version"] in (1, 2) and state["batches"][1]["version"] == 2
    resumed, summary = _resume_cut(tmp_path / "a1", tmp_path / "cut", 2, "runner.max_steps=5",
                                   "runner.save_interval=2")
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    _same(rows, resumed, (3, 4))  # the saved batches, trained from the same state: bit-identical
    assert [r["weights/version"] for r in resumed.values()] == [1, 2, 3, 4, 5]
    assert all(r["staleness/max"] in (0, 1) and r["staleness/channel"] in (0, 1) for r in resumed.values())
    assert summary["schedule"]["restored"] == 2
    _accounting(summary["schedule"], 3)
