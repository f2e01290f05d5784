"""Resources a run leaves behind, and what it exposes on the network.

- A colocated weight sync puts the rollout ranks' arenas in /dev/shm under the run's prefix; after a
  rank is SIGKILLed (no destructor runs) the controller's cleanup removes every one of them.
- Every listening socket of the session's processes (driver, Ray's services, every worker) is on
  loopback or is a Ray service that refuses a client without the token (and accepts it with).
- The staged receiver's wait for the next sync is bounded (`reshard.idle_timeout_s`).
- A run refuses a Ray without token authentication unless told otherwise.
"""

import os
import signal
import tempfile
import time

import pytest

from rlinf.config import ClusterConfig
from rlinf.errors import InputError
from rlinf.reshard import wait_all
from rlinf.scheduler import Cluster, WorkerDiedError, WorkerError, WorkerGroup
from rlinf.utils.runfiles import SHM_DIR, run_files
from tests import netcheck
from tests.integration.run_files_workers import PidSource, PidTarget

pytestmark = pytest.mark.timeout(300)


def _rlinf_entries(prefix: str):
    """Entries of /dev/shm and the temp dir that belong to `prefix`, or that use the old unowned name."""
    out = []
    for root in (SHM_DIR, tempfile.gettempdir()):
        if os.path.isdir(root):
            out += [n for n in os.listdir(root) if n.startswith(prefix) or n.startswith("rlinf-reshard-")]
    return out


def test_killed_rank_after_colocated_sync_leaves_no_files(cluster):
    own = Cluster(ClusterConfig(num_devices=4, wait_timeout_s=120))  # a controller of its own: own run prefix
    assert own.run_prefix != cluster.run_prefix
    src = WorkerGroup(own, PidSource, "rf_src", [0, 1], args=(2,))
    tgt = WorkerGroup(own, PidTarget, "rf_tgt", [0, 1])
    try:
        src.call("setup").wait()
        src.link(tgt)
        plan = src.call("make_source", "k", tgt.name, 2, 1, 0.01).wait()[0]
        handles = tgt.call("make_target", "k", plan, src.name, True, 0.01).wait()
        assert src.call("attach", "k", handles).wait() == [[0, 1], [0, 1]]  # colocated: written directly
        assert wait_all([src.call("send", "k", 1), tgt.call("recv", "k", 1)]) == [[1, 1], [1, 1]]
        arenas = run_files(own.run_prefix)
        assert len(arenas) == 2 and all(p.startswith(SHM_DIR + "/") and ".rf_tgt." in p for p in arenas), arenas
        assert run_files(own.run_prefix, "rf_tgt") == arenas and run_files(own.run_prefix, "rf_src") == []

        os.kill(tgt.call("pid", ranks=[1]).wait()[0], signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=r"rf_tgt\[rank 1\]"):
            tgt.call("pid", ranks=[1]).wait()
        assert run_files(own.run_prefix) == arenas  # the dead rank removed nothing: the controller must
    finally:
        src.shutdown()
        tgt.shutdown()
        own.shutdown()  # what Runner.close does after stopping the groups (normal end, failure, restart)
    assert _rlinf_entries(own.run_prefix) == []
    assert own.shutdown() is None and _rlinf_entries(own.run_prefix) == []  # idempotent


def test_release_group_files_removes_only_that_group(cluster):
    own = Cluster(ClusterConfig(num_devices=4, wait_timeout_s=120))
    tgt = WorkerGroup(own, PidTarget, "rf_a", [2, 3])
    src = WorkerGroup(own, PidSource, "rf_b", [2, 3], args=(2,))
    try:
        src.call("setup").wait()
        src.link(tgt)
        plan = src.call("make_source", "k", tgt.name, 2, 1, 0.01).wait()[0]
        tgt.call("make_target", "k", plan, src.name, True, 0.01).wait()
        keep = netcheck_touch(own.run_prefix, "rf_b")
        assert len(run_files(own.run_prefix, "rf_a")) == 2
        tgt.kill()  # no destructor runs in a killed rank: the group's kill releases its files
        assert run_files(own.run_prefix) == [keep]
        assert own.release_group_files("rf_a") == 0  # idempotent
    finally:
        src.shutdown()
        tgt.shutdown()
        own.shutdown()
    assert _rlinf_entries(own.run_prefix) == []


def netcheck_touch(prefix: str, group: str) -> str:
    """A file of another group of the same run (made here, named as a worker of `group` would)."""
    path = os.path.join(tempfile.gettempdir(), f"{prefix}.{group}.0.test.0")
    open(path, "w").close()
    return path


def test_every_listening_socket_is_loopback_or_token_guarded(cluster):
    src = WorkerGroup(cluster, PidSource, "net_src", [0, 1], args=(2,))
    tgt = WorkerGroup(cluster, PidTarget, "net_tgt", [2, 3])
    try:
        src.call("setup").wait()
        src.link(tgt)  # a second store and gloo pairs across the groups
        worker_pids = src.call("pid").wait() + tgt.call("pid").wait()
        sockets = netcheck.listening(netcheck.descendants(os.getpid()))
        token = netcheck.ray_token()
        exposed, guarded = [], {}
        for pid, name, ip, port in sockets:
            if ip in netcheck.LOOPBACK:
                continue
            if netcheck.is_ray_autoscaler_metrics(pid, port):
                guarded[(pid, port)] = "documented: ray autoscaler metrics (read-only)"
                continue
            for _ in range(20):  # 'retry': inconclusive (a Ray worker still starting, a loaded machine)
                kind = netcheck.refuses_without_token(ip, port, token)
                if kind != "retry":
                    break
                time.sleep(0.5)
            if kind == "retry" and (ip, port) not in {(i, o) for _, _, i, o in netcheck.listening([pid])}:
                continue  # closed meanwhile (an idle Ray worker that exited)
            guarded[(pid, port)] = kind
            if kind not in ("grpc", "http"):
                exposed.append((pid, name, ip, port, kind))
        assert exposed == [], f"listening beyond loopback without Ray's token check: {exposed}"
        names = {name for _, name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names and "grpc" in guarded.values()  # the check saw Ray's services
        for pid in worker_pids:  # each worker: Ray's own core-worker server, everything else loopback
            assert sum(1 for p, _, ip, _ in sockets if p == pid and ip not in netcheck.LOOPBACK) == 1, pid
        for pid in (worker_pids[0], worker_pids[2]):  # the first rank of each group serves its stores there
            assert any(p == pid and ip == "127.0.0.1" for p, _, ip, _ in sockets), pid
    finally:
        src.shutdown()
        tgt.shutdown()


def test_staged_receiver_idle_wait_is_bounded(cluster):
    src = WorkerGroup(cluster, PidSource, "idle_src", [0], args=(1,))
    tgt = WorkerGroup(cluster, PidTarget, "idle_tgt", [1])
    try:
        src.call("setup").wait()
        src.link(tgt)
        plan = src.call("make_source", "k", tgt.name, 1, 1, 0.01).wait()[0]
        tgt.call("make_staged", "k", plan, src.name, 1.0).wait()
        # no publish ever comes: the receiver gives up after idle_timeout_s and apply says why
        with pytest.raises(WorkerError, match=r"ReshardTimeoutError(.|\n)*reshard\.idle_timeout_s"):
            tgt.call("apply", "k", 1, 120.0).wait()
    finally:
        src.shutdown()
        tgt.shutdown()


def test_run_refuses_ray_without_token_auth(cluster, monkeypatch):
    import ray._private.authentication.authentication_utils as auth

    monkeypatch.setattr(auth, "is_token_auth_enabled", lambda: False)
    with pytest.raises(InputError, match="cluster.ray_token_auth"):
        Cluster(ClusterConfig(num_devices=1))
    allowed = Cluster(ClusterConfig(num_devices=1, ray_token_auth=False))  # explicitly allowed: a warning
    allowed.shutdown()
    monkeypatch.undo()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # refused before Ray would start
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    with pytest.raises(InputError, match="RAY_AUTH_MODE=disabled"):
        Cluster(ClusterConfig(num_devices=1))
