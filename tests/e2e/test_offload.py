"""Colocated offload: the sync schedule moves groups between phases, seen in the run's timeline.

On this CPU machine offload moves nothing (host memory is the device), so what is checked here is
who the schedule tells to move and when; tests/gpu/test_offload_gpu.py checks the memory and the
bit-exact return on a GPU."""

import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.run import run_training
from rlinf.workflows import components_for

pytestmark = pytest.mark.timeout(300)


def test_colocated_offload_transitions_follow_the_phases(cluster, tmp_path):
    cfg = load_config("configs/grpo_arith.yaml", [
        "runner.max_steps=2", "data.batch_size=2", "algorithm.group_size=2", "algorithm.kl_coef=0.1",
        "actor.offload=true", "runner.log_interval=1", "actor.micro_batch_size=4", "data.eval_size=2",
        "runner.plots=false", "runner.tensorboard=false", f"runner.output_dir={tmp_path / 'run'}",
        "runner.progress_bar=false"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    assert placement.mode == "colocated"
    run_training(cfg, placement, "grpo_arith")
    trace = json.loads((tmp_path / "run" / "timeline.json").read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    spans = sorted((e for e in trace if e["ph"] == "X"), key=lambda e: e["ts"])

    def moves(group):
        return [e["name"] for e in spans if names[e["pid"]] == group and e["name"] in ("offload", "onload")]

    # evaluations need everyone (the reference for the KL); each step: sync (the reference is in the
    # way), collect (the actor leaves), train (actor and reference come back).
    assert moves("actor") == ["offload", "onload"] * 2
    assert moves("reference") == ["offload", "onload"] * 2
    assert moves("rollout") == [] and moves("reward") == []  # rollout.offload is off; reward never moves
    actor = [e for e in spans if names[e["pid"]] == "actor" and e["name"] in ("offload", "onload", "update")]
    for i, e in enumerate(actor):
        if e["name"] == "update":
            assert actor[i - 1]["name"] == "onload", actor  # the actor trains only after it came back
