"""Async schedule: staleness 0 reproduces the sync schedule bit for bit; staleness 1 stays within bound.
Both with a checkpoint mid-run and a resume from it (the queued batches are saved in the checkpoint and
re-queued on resume; see AsyncSchedule): staleness 0 resumes bit-identical to the sync run; staleness 1
trains the saved batches bit-identically and every step exactly once."""

import json
import shutil

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.runners import checkpoints
from rlinf.workflows import components_for
from rlinf.run import run_training
from rlinf.utils.timeline import read_timeline

pytestmark = pytest.mark.timeout(400)

COMMON = ["runner.progress_bar=false", "cluster.num_devices=2", "runner.log_interval=1", "data.batch_size=8", "algorithm.group_size=8",
          "runner.max_steps=5", "data.eval_size=4", "runner.eval_interval=0"]


def _rows(config, out, *overrides, resume=None):
    cfg = load_config(config, [*COMMON, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "x", resume=resume)
    return {r["step"]: r for r in map(json.loads, open(out / "metrics.jsonl")) if "actor/pg_loss" in r}, summary


def _cut(run_dir, out, step):
    """The run directory as a run killed right after its step-`step` checkpoint left it."""
    shutil.copytree(run_dir, out)
    for ckpt in (out / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    return out


def _same(expected, got, steps):
    for step in steps:
        for key, value in expected[step].items():
            if not key.startswith(("time/", "throughput/")):
                assert got[step][key] == value, (step, key)


def _accounting(schedule, consumed):
    dropped = sum(v for k, v in schedule.items() if k.startswith("dropped/"))
    assert schedule["consumed"] == consumed and schedule["produced"] == consumed + dropped


def test_async_with_zero_staleness_equals_sync(cluster, tmp_path):
    sync, _ = _rows("configs/grpo_arith.yaml", tmp_path / "sync")
    asyn, _ = _rows("configs/grpo_arith.yaml", tmp_path / "async", "runner.schedule=async", "runner.save_interval=3")
    assert sorted(asyn) == [1, 2, 3, 4, 5]
    _same(sync, asyn, sync)  # the checkpoint (the producer quiesced for it) changes nothing
    # s = 0: at the step-3 checkpoint the producer has made exactly batch 3 (weights of version 3)
    state = checkpoints.load_state(tmp_path / "async" / "checkpoints" / "step_000003" / "schedule.pt")
    assert state["next_step"] == 4 and [(b["step"], b["version"]) for b in state["batches"]] == [(3, 3)]
    cut = _cut(tmp_path / "async", tmp_path / "cut", 3)
    resumed, summary = _rows("configs/grpo_arith.yaml", cut, "runner.schedule=async", "runner.save_interval=3",
                             resume=str(cut))
    assert summary["resumed_from_step"] == 3 and sorted(resumed) == [1, 2, 3, 4, 5]
    _same(sync, resumed, (4, 5))  # bit-identical to the uninterrupted run (and to sync)
    assert summary["schedule"]["restored"] == 1
    _accounting(summary["schedule"], 2)


def test_async_staleness_one_bounded_and_nothing_lost(cluster, tmp_path):
    rows, summary = _rows("configs/grpo_arith_async.yaml", tmp_path / "a1", "runner.max_steps=6",
                          "runner.save_interval=3")
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]  # one batch consumed per step, none dropped
    stale = [r["staleness/max"] for r in rows.values()]
    assert max(stale) <= 1
    assert all(r["staleness/channel"] <= 1 for r in rows.values())
    assert all(r["samples"] == 64 for r in rows.values())
    assert all("offpolicy/is_ratio_mean" in r for r in rows.values())
    schedule = summary["schedule"]
    assert schedule["name"] == "async" and schedule["bound"] == 1
    assert sum(schedule["staleness_histogram"].values()) == 6  # every consumed batch counted once
    assert set(schedule["staleness_histogram"]) <= {"0", "1"}
    assert schedule["staleness_histogram"].get("1", 0) >= 1  # the bound was reached, not merely respected
    _accounting(schedule, 6)
    # At the step-3 checkpoint (weights of version 3 published) the producer had made every batch that
    # version admits: steps 3 and 4; it continues at step 5.
    state = checkpoints.load_state(tmp_path / "a1" / "checkpoints" / "step_000003" / "schedule.pt")
    assert state["next_step"] == 5 and [b["step"] for b in state["batches"]] == [3, 4]
    assert state["batches"][0]["version"] in (2, 3) and state["batches"][1]["version"] == 3
    cut = _cut(tmp_path / "a1", tmp_path / "cut", 3)
    resumed, summary = _rows("configs/grpo_arith_async.yaml", cut, "runner.max_steps=6", "runner.save_interval=3",
                             resume=str(cut))
    assert summary["resumed_from_step"] == 3 and sorted(resumed) == [1, 2, 3, 4, 5, 6]
    _same(rows, resumed, (4, 5))  # the saved batches, trained from the same state: bit-identical
    assert all(r["staleness/max"] <= 1 and r["staleness/channel"] <= 1 for r in resumed.values())
    assert summary["schedule"]["restored"] == 2
    _accounting(summary["schedule"], 3)


def _timeline_names(run_dir):
    return {(e["group"], e["name"]) for e in read_timeline(run_dir / "timeline.json")}


def test_collect_ahead_and_scoring_in_rollout_change_nothing_and_a_stop_counts_its_batch(cluster, tmp_path):
    """The defaults of configs/grpo_arith.yaml, runner.collect_ahead (train() issues the next step's generation
    behind the weight transfer) and reward.in_rollout (the rollout ranks score their own responses, no reward
    group), against both off: every metric, evaluations included, is equal; each batch was generated by the
    weights of the step that trains on it; early stopping after step 2 drops the batch issued for step 3."""
    common = ["runner.max_steps=4", "runner.eval_interval=2"]
    inside, summary_inside = _rows("configs/grpo_arith.yaml", tmp_path / "inside", *common,
                                   "runner.collect_ahead=false", "reward.in_rollout=false")
    ahead, summary_ahead = _rows("configs/grpo_arith.yaml", tmp_path / "ahead", *common)
    assert sorted(ahead) == [1, 2, 3, 4] and "eval/accuracy" in ahead[2]
    _same(inside, ahead, inside)
    assert summary_ahead["eval"] == summary_inside["eval"]
    assert [r["staleness/max"] for r in ahead.values()] == [0.0] * 4
    assert not any(k.startswith("dropped/") for k in summary_ahead["schedule"])  # the last step issues nothing
    assert "reward" not in summary_ahead["placement"]["components"]
    names = _timeline_names(tmp_path / "ahead")
    assert ("rollout", "score") in names and not any(group == "reward" for group, _ in names)
    assert ("reward", "score_generation") in _timeline_names(tmp_path / "inside")
    stop = ["runner.stop_metric=accuracy", "runner.stop_value=0.0"]  # the first periodic evaluation stops the run
    _, stopped = _rows("configs/grpo_arith.yaml", tmp_path / "stop", *common, *stop)
    assert stopped["steps"] == 2 and stopped["schedule"]["dropped/unconsumed_at_stop"] == 1
    logged = [json.loads(line) for line in open(tmp_path / "stop" / "metrics.jsonl")]
    assert any(r.get("dropped/unconsumed_at_stop") == 1 for r in logged)
