"""Every worker-side failure restarts the same way. A matrix of runs in which one rank of one group
(actor, critic, rollout, reward, env) is SIGKILLed mid-run, under the sync and async schedules, in
reasoning and embodied runs: each run stops every group, restarts once from the newest complete
checkpoint, redoes at most one checkpoint interval, completes `max_steps`, leaves no run files in
/dev/shm or the temp dir, and (sync schedules, whose batches do not depend on timing) logs exactly
the metrics of an uninterrupted run of the same config. Without restarts a dead rank fails the run
fast with an error naming the group and rank."""

import json
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training
from rlinf.scheduler import WorkerDiedError, WorkerError

pytestmark = pytest.mark.timeout(400)

MAX_STEPS, SAVE_INTERVAL, KILL_AFTER_STEP = 6, 2, 3
COMMON = ["runner.progress_bar=false", "runner.log_interval=1", "runner.eval_interval=0", "runner.plots=false",
          "runner.tensorboard=false", f"runner.max_steps={MAX_STEPS}", f"runner.save_interval={SAVE_INTERVAL}"]
# One tiny recipe per (workflow, schedule); each fault case SIGKILLs one rank of one of its groups.
CONFIGS = {
    # actor, critic, rollout and reward colocated on one device: one rank each
    "reasoning_sync": ("configs/ppo_arith.yaml", [
        "cluster.num_devices=1", "data.batch_size=4", "algorithm.group_size=2", "data.eval_size=4"]),
    # actor on device 0, rollout + reward on device 1 (1 rank each), staleness bound 1
    "reasoning_async": ("configs/grpo_arith_async.yaml", [
        "data.batch_size=4", "algorithm.group_size=4", "data.eval_size=4"]),
    # 2 actor ranks (data parallel, gloo: a killed rank leaves its peer blocked in a collective)
    "embodied_sync": ("configs/ppo_cartpole_mlp.yaml", [
        "runner.stop_metric=null", "runner.stop_value=null", "env.num_envs=4", "env.rollout_steps=16",
        "actor.global_batch_size=32", "env.eval_episodes=2", "env.max_episode_steps=20", "cluster.num_devices=2",
        "cluster.component_placement={actor: 0-1, rollout: 0, env: 0}"]),
    "embodied_async": ("configs/ppo_cartpole_mlp_async.yaml", [
        "env.num_envs=4", "env.rollout_steps=16", "actor.global_batch_size=32", "env.eval_episodes=2",
        "env.max_episode_steps=20"]),
}
DETERMINISTIC = {"reasoning_sync", "embodied_sync"}
_OWN_FILES = re.compile(rf"^rlinf-{os.getpid()}-")   # files of runs this process controls
_ANY_RUN = re.compile(r"^rlinf-\d+-[0-9a-f]+(\.|$)")  # files of some controller's run (maybe another process's)


def _config(out, *overrides, name="reasoning_sync"):
    path, extra = CONFIGS[name]
    cfg = load_config(path, [*COMMON, *extra, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    return cfg, placement


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _untimed(rows):
    """Metric rows without wall-clock measurements (the only keys that may differ between equal runs)."""
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/")) and not k.endswith("_time_s")}
            for r in rows]


def _complete_checkpoints(out):
    return sorted(int(p.parent.name.split("_")[1]) for p in (Path(out) / "checkpoints").glob("step_*/COMPLETE"))


def _kill_at(out, group, rank, min_step, info, deadline_s=180):
    """SIGKILL rank `rank` of `group` once metrics.jsonl shows step >= min_step. Fills `info` with the
    newest logged step (`step`) and the newest complete checkpoint (`checkpoint`) at the moment of the kill."""
    deadline = time.monotonic() + deadline_s
    metrics = Path(out) / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.exists():
            steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
            if steps and max(steps) >= min_step:
                break
        time.sleep(0.05)
    else:
        return
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(f"{group}:{rank}:"):
            actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
            pid = ray.get(actor._rlinf_ping.remote(), timeout=60)[2]
            steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
            info["checkpoint"] = max(_complete_checkpoints(out), default=0)
            info["step"] = max(steps)
            os.kill(pid, signal.SIGKILL)
            return


def _kill_when(out, group, rank, min_step, killed):
    """Like `_kill_at`; appends the newest logged step at the kill to `killed` (used by other tests)."""
    info: dict = {}
    _kill_at(out, group, rank, min_step, info)
    if info:
        killed.append(info["step"])


def _run_files():
    """rlinf run files in /dev/shm and the temp dir that this process's runs may have left: those carrying
    its controllers' prefix, and any rlinf-* file that carries no controller's prefix at all."""
    found = set()
    for root in {"/dev/shm", tempfile.gettempdir()}:
        if os.path.isdir(root):
            found |= {os.path.join(root, n) for n in os.listdir(root)
                      if _OWN_FILES.match(n) or (n.startswith("rlinf-") and not _ANY_RUN.match(n))}
    return found


def _run_with_kill(out, name, group, rank, *overrides):
    cfg, placement = _config(out, "runner.max_restarts=1", *overrides, name=name)
    files_before = _run_files()
    info: dict = {}
    killer = threading.Thread(target=_kill_at, args=(out, group, rank, KILL_AFTER_STEP, info), daemon=True)
    killer.start()
    summary = run_training(cfg, placement, name)
    killer.join(timeout=5)
    assert info, f"the test did not manage to kill {group}[{rank}]"
    return summary, info, _run_files() - files_before


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """One uninterrupted run per deterministic config, shared by its fault cases: {name: metric rows}."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"reference_{name}") / "run"
            cfg, placement = _config(out, name=name)
            summary = run_training(cfg, placement, name)
            assert summary["steps"] == MAX_STEPS and summary["restarts"] == 0
            cache[name] = _untimed(_rows(out))
        return cache[name]

    return get


CASES = [
    ("reasoning_sync", "actor", 0),
    ("reasoning_sync", "rollout", 0),
    ("reasoning_sync", "reward", 0),
    ("reasoning_sync", "critic", 0),
    ("reasoning_async", "rollout", 0),  # fails in the producer thread; the training loop re-raises it
    ("embodied_sync", "env", 0),
    ("embodied_sync", "rollout", 0),
    ("embodied_sync", "actor", 1),
    ("embodied_async", "env", 0),
]
# Both schedules and both workflows, and the actor, rollout, reward and env groups, stay in `make test`;
# kills that repeat one of those through the same restart path run in `make test-slow`: the embodied
# rollout and actor (the reasoning ones), the critic (an FSDP group like the actor).
EXTENDED = {("embodied_sync", "rollout"), ("embodied_sync", "actor"), ("reasoning_sync", "critic")}


@pytest.mark.parametrize("name, group, rank", [
    pytest.param(*c, marks=[pytest.mark.extended] if c[:2] in EXTENDED else []) for c in CASES],
    ids=[f"{n}-{g}" for n, g, _ in CASES])
def test_killed_rank_restarts_from_newest_checkpoint_and_run_completes(cluster, reference, tmp_path, name, group,
                                                                       rank):
    out = tmp_path / "run"
    summary, info, leftover = _run_with_kill(out, name, group, rank)
    assert summary["restarts"] == 1 and summary["steps"] == MAX_STEPS
    # Resumed from the newest complete checkpoint: at least the newest one when the rank died, at most the
    # newest step logged before the failure stopped the run, and at most one save interval behind it.
    resumed = summary["resumed_from_step"]
    redone = [json.loads(line)["step"] for f in out.glob(f"metrics.after-step-{resumed}*.jsonl")
              for line in f.read_text().splitlines() if line.strip()]
    failed_after = max(redone, default=resumed)  # the newest step logged before the failure
    assert resumed % SAVE_INTERVAL == 0 and resumed >= KILL_AFTER_STEP - 1, (resumed, info)
    assert info["checkpoint"] <= resumed <= failed_after <= resumed + SAVE_INTERVAL, (resumed, info, failed_after)
    assert _complete_checkpoints(out) == list(range(SAVE_INTERVAL, MAX_STEPS + 1, SAVE_INTERVAL))
    rows = _rows(out)
    assert sorted(r["step"] for r in rows if "weights/version" in r) == list(range(1, MAX_STEPS + 1))
    if name in DETERMINISTIC:
        assert _untimed(rows) == reference(name)
    assert not leftover, f"run files left behind: {sorted(leftover)}"


def test_killed_rank_without_restarts_fails_fast_naming_it(cluster, tmp_path):
    out = tmp_path / "run"
    cfg, placement = _config(out, "runner.max_steps=400", "runner.max_restarts=0", "runner.save_interval=0",
                             name="reasoning_sync")
    files_before = _run_files()
    info: dict = {}
    threading.Thread(target=_kill_at, args=(out, "rollout", 0, 2, info), daemon=True).start()
    with pytest.raises(WorkerError) as err:
        run_training(cfg, placement, "ppo_arith")
    assert info
    logged = [r["step"] for r in _rows(out)]
    assert max(logged) <= info["step"] + 2  # failed at (about) the step that needed the dead rank, not later
    assert isinstance(err.value, WorkerDiedError)
    assert err.value.group == "rollout" and err.value.rank == 0
    assert "rollout[rank 0] died" in str(err.value)
    assert not _run_files() - files_before
