"""actor.backend=deepspeed: a tiny GRPO run through the real system with a DeepSpeed ZeRO actor.

The first DeepSpeed initialize on a machine compiles an op with g++ (~1 min, cached under the home
directory), hence `slow`."""

import json
import math

import pytest

pytest.importorskip("deepspeed")

from rlinf.config import load_config  # noqa: E402
from rlinf.placement import build_placement  # noqa: E402
from rlinf.workflows import components_for  # noqa: E402
from rlinf.run import run_training  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def _run(tmp_path, name, *overrides, resume=None):
    cfg = load_config("configs/grpo_arith.yaml", [
        "runner.max_steps=3", "runner.eval_interval=0", "data.batch_size=4", "algorithm.group_size=4",
        "cluster.num_devices=2", "runner.log_interval=1", "actor.micro_batch_size=2", "data.eval_size=4",
        f"runner.output_dir={tmp_path / name}", "runner.progress_bar=false", "runner.plots=false", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_arith", resume=resume)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "actor/pg_loss" in r]


# ZeRO-2 through the resharding engine runs in `make test`; the other stages and transports (same code
# paths, other DeepSpeed partitioning) in `make test-slow`.
@pytest.mark.parametrize("stage,transport", [(2, "auto"), pytest.param(3, "object_store", marks=pytest.mark.extended),
                                             pytest.param(3, "auto", marks=pytest.mark.extended),
                                             pytest.param(1, "object_store", marks=pytest.mark.extended)])
def test_deepspeed_grpo_run_trains_and_syncs_weights(cluster, tmp_path, stage, transport):
    summary, train = _run(tmp_path, f"ds{stage}", "actor.backend=deepspeed", f"actor.zero_stage={stage}",
                          f"reshard.transport={transport}")
    assert summary["steps"] == 3
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(math.isfinite(r["actor/pg_loss"]) for r in train)
    assert all(math.isfinite(r["actor/grad_norm"]) and r["actor/grad_norm"] > 0 for r in train)
    assert [r["weights/version"] for r in train] == [1, 2, 3]
    assert all(r["staleness/max"] == 0 for r in train)  # the rollout generated with the synced weights
    trace = json.loads((tmp_path / f"ds{stage}" / "timeline.json").read_text())["traceEvents"]
    phases = {e["name"] for e in trace if e["ph"] == "X"}
    expected = {"send_weights", "recv_weights"} if transport == "auto" else {"export_weights", "load_weights"}
    assert expected <= phases, phases


@pytest.mark.extended  # resume is in make test with FSDP (test_resume); the DeepSpeed variant in make test-slow
def test_deepspeed_checkpoint_resume_reproduces_metrics(cluster, tmp_path):
    ds = ["actor.backend=deepspeed", "runner.save_interval=2"]
    _, full = _run(tmp_path, "full", *ds)
    _run(tmp_path, "cut", *ds, "runner.max_steps=2")
    summary, resumed = _run(tmp_path, "cut", *ds, resume=str(tmp_path / "cut"))
    assert summary["resumed_from_step"] == 2
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in ("actor/pg_loss", "actor/grad_norm", "reward/mean"):
        assert resumed[2][key] == pytest.approx(full[2][key], rel=1e-5, abs=1e-7), key


@pytest.mark.extended  # numerics of the DeepSpeed backend against FSDP: make test-slow
def test_deepspeed_first_step_matches_fsdp(cluster, tmp_path):
    """Same seed, same rollout: the first update's gradient norm is the same under both backends
    (micro-batch accumulation over 2 micro-batches per rank, 2 ranks)."""
    _, fsdp = _run(tmp_path, "fsdp", "runner.max_steps=1")
    _, ds = _run(tmp_path, "ds", "runner.max_steps=1", "actor.backend=deepspeed")
    assert fsdp[0]["reward/mean"] == ds[0]["reward/mean"]
    assert ds[0]["actor/grad_norm"] == pytest.approx(fsdp[0]["actor/grad_norm"], rel=1e-4)
    assert ds[0]["actor/pg_loss"] == pytest.approx(fsdp[0]["actor/pg_loss"], rel=1e-4, abs=1e-6)
