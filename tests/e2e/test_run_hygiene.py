"""`python -m rlinf.run` as a user runs it, watched from outside: a rank SIGKILLed mid-run, a restart,
and then nothing left behind.

While the run goes: every listening socket of its processes is on loopback or is a Ray service that
refuses a client without the token. After it exits: no process of the run is alive, and neither
/dev/shm nor the temp dir holds a file of the run (the colocated weight sync's arenas existed while it ran).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests import netcheck

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]


def _run_files(pid: int):
    prefix = f"rlinf-{pid}-"
    out = []
    for root in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(root):
            out += [os.path.join(root, n) for n in os.listdir(root) if n.startswith(prefix)]
    return out


def _steps(out: Path):
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]


def test_run_with_a_killed_rank_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlinf.run", "--config", "configs/grpo_arith.yaml", "cluster.num_devices=2",
           "runner.max_steps=30", "runner.max_restarts=1", "runner.eval_interval=0", "runner.log_interval=1",
           "runner.save_interval=0", "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false",
           "data.batch_size=4", "algorithm.group_size=4", "data.eval_size=4", f"runner.output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "run.log", "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    seen = {}          # pid -> create_time of every process of the run
    checked = {}       # (pid, ip, port) -> 'loopback' | 'grpc' | 'http' | 'exposed: ...'
    files_seen = set()
    retry = set()      # listening, but every probe so far was inconclusive
    killed = None
    token = netcheck.ray_token()
    deadline = time.monotonic() + 780  # generous: a loaded 2-core machine starts Ray slowly
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            procs = netcheck.descendants(proc.pid)
            seen.update(procs)
            files_seen.update(_run_files(proc.pid))
            if killed is None and any(".rollout." in f for f in files_seen):
                # the colocated arenas exist: SIGKILL a rollout rank (Ray titles an actor's process
                # ray::<Class>[.method] once its constructor has run)
                for pid in procs:
                    try:
                        title = " ".join(psutil.Process(pid).cmdline())
                    except psutil.Error:
                        continue
                    if title.startswith("ray::RolloutWorker"):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
            sockets = netcheck.listening(procs)
            retry &= {(pid, ip, port) for pid, _, ip, port in sockets}  # gone before a conclusive answer
            for pid, name, ip, port in sockets:
                key = (pid, ip, port)
                if key in checked:
                    continue
                if ip in netcheck.LOOPBACK:
                    checked[key] = "loopback"
                    continue
                if netcheck.is_ray_autoscaler_metrics(pid, port):  # read-only, documented in docs/security.md
                    checked[key] = "documented"
                    continue
                kind = netcheck.refuses_without_token(ip, port, token)
                if kind not in ("grpc", "http") and key not in {(p, i, o) for p, _, i, o in netcheck.listening([pid])}:
                    continue  # closed while we probed (a process shutting down): look again if it reopens
                if kind == "retry":
                    retry.add(key)  # inconclusive (starting, or a missed deadline): probe again next round
                    continue
                retry.discard(key)
                checked[key] = kind if kind in ("grpc", "http") else f"exposed: {name}: {kind}"
            time.sleep(0.5)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        log.seek(0)
        output = log.read()
        log.close()
    assert proc.returncode == 0, output[-4000:]
    assert killed is not None, "the test did not manage to kill a rollout rank"
    assert "restarting worker groups (1/1)" in output, output[-4000:]
    assert max(_steps(out)) == 30

    exposed = {k: v for k, v in checked.items() if v.startswith("exposed")}
    assert exposed == {}, f"listening beyond loopback without Ray's token check: {exposed}"
    assert retry == set(), f"listening until the end of the run, never answered conclusively: {retry}"
    assert "grpc" in checked.values() and "loopback" in checked.values(), checked

    assert any(".rollout." in f for f in files_seen), files_seen  # the arenas existed while it ran
    assert _run_files(proc.pid) == []

    # ray.shutdown() has stopped every Ray process before the controller exits; a worker's last
    # moments (the raylet SIGKILLs it) may lag the exit by a little: wait for that, no longer.
    for _ in range(100):
        left = [pid for pid, created in seen.items() if netcheck.alive(pid, created)]
        if not left:
            break
        time.sleep(0.1)
    assert left == [], f"processes of the run still alive after it exited: {left}"
