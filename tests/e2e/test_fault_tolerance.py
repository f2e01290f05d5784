"""A rank SIGKILLed mid-run: with restarts the run resumes from its checkpoint and finishes every
step; without, it fails fast with an error naming the dead group and rank."""

import json
import os
import signal
import threading
import time

import pytest
import ray

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.runners.components import components_for
from rlinf.runners.runner import run
from rlinf.scheduler import WorkerDiedError, WorkerError

pytestmark = pytest.mark.timeout(400)


def _config(out, *overrides):
    cfg = load_config("configs/grpo_arith.yaml", [
        "runner.progress_bar=false", "cluster.num_devices=2", "runner.log_interval=1", "data.batch_size=4", "algorithm.group_size=4",
        "data.eval_size=4",
        "runner.eval_interval=0", "runner.save_interval=2", f"runner.output_dir={out}", *overrides])
    return cfg, build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))


def _kill_when(out, group, rank, min_step, killed):
    """SIGKILL rank `rank` of `group` once metrics.jsonl shows step >= min_step."""
    deadline = time.monotonic() + 120
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists():
            steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
            if steps and max(steps) >= min_step:
                break
        time.sleep(0.05)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(f"{group}:{rank}:"):
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            pid = ray.get(actor._rlinf_ping.remote(), timeout=60)[2]
            os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())
            return


@pytest.mark.parametrize("group", ["rollout", "actor"])
def test_killed_rank_restarts_and_run_completes(cluster, tmp_path, group):
    out = tmp_path / "run"
    cfg, placement = _config(out, "runner.max_steps=40", "runner.max_restarts=1")
    killed: list = []
    killer = threading.Thread(target=_kill_when, args=(out, group, 1, 3, killed), daemon=True)
    killer.start()
    summary = run(cfg, placement, "grpo_arith")
    killer.join(timeout=5)
    assert killed, "the test did not manage to kill a rank"
    assert summary["restarts"] == 1 and summary["steps"] == 40
    assert summary["resumed_from_step"] >= 2  # resumed from a checkpoint, not from scratch
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = sorted({s for s in steps if s > 0})
    assert train_steps == list(range(1, 41))


def test_killed_rank_without_restarts_fails_fast_naming_it(cluster, tmp_path):
    out = tmp_path / "run"
    cfg, placement = _config(out, "runner.max_steps=400", "runner.max_restarts=0")
    killed: list = []
    threading.Thread(target=_kill_when, args=(out, "rollout", 0, 2, killed), daemon=True).start()
    with pytest.raises(WorkerError) as err:
        run(cfg, placement, "grpo_arith")
    failed_at = time.monotonic()
    assert killed
    assert failed_at - killed[0] < 30  # includes stopping the other groups
    assert isinstance(err.value, WorkerDiedError)
    assert err.value.group == "rollout" and err.value.rank == 0
    assert "rollout[rank 0] died" in str(err.value)
