"""DAPO dynamic sampling in tiny GRPO runs, sync and async schedules: every trained batch is full and
made of groups with signal (or reported padding), with the refill metrics logged."""

import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("config,extra", [
    ("configs/grpo_arith.yaml", ["cluster.num_devices=2"]),
    ("configs/grpo_arith_async.yaml", []),
])
def test_dynamic_sampling_run(cluster, tmp_path, config, extra):
    cfg = load_config(config, [
        "runner.max_steps=3", "runner.eval_interval=0", "data.batch_size=4", "algorithm.group_size=4",
        "runner.log_interval=1", "actor.micro_batch_size=16", "data.eval_size=4", "runner.progress_bar=false",
        "runner.plots=false", "runner.tensorboard=false", "algorithm.dynamic_sampling=true",
        "algorithm.dynamic_sampling_max_rounds=3", f"runner.output_dir={tmp_path / 'run'}", *extra])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_dynamic")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert len(train) == 3 and summary["steps"] == 3
    for r in train:
        assert r["samples"] == 16  # always a full batch of 4 groups x 4
        assert 1 <= r["dynamic_sampling/rounds"] <= 3
        assert r["dynamic_sampling/kept_groups"] + r["dynamic_sampling/padded_groups"] == 4
        assert r["dynamic_sampling/generated_groups"] >= 4
        # every generated group is accounted for, and the dropped fraction is the no-signal share of them
        assert r["dynamic_sampling/generated_groups"] == (r["dynamic_sampling/kept_groups"]
                                                          + r["dynamic_sampling/surplus_groups"]
                                                          + r["dynamic_sampling/no_signal_groups"])
        assert r["dynamic_sampling/dropped_fraction"] == pytest.approx(
            r["dynamic_sampling/no_signal_groups"] / r["dynamic_sampling/generated_groups"])
        assert r["dropped/surplus_groups"] == r["dynamic_sampling/surplus_groups"]
        assert r["dynamic_sampling/padded_groups"] <= r["dynamic_sampling/no_signal_groups"]
        if r["dynamic_sampling/rounds"] < 3:  # stopped early: the batch filled with signal
            assert r["dynamic_sampling/kept_groups"] == 4
    if config == "configs/grpo_arith.yaml":  # seeded: the untrained model's flat groups force refills
        assert sum(r["dynamic_sampling/rounds"] for r in train) > len(train)
