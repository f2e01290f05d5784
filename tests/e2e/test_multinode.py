"""Runs on a Ray cluster of two nodes, started on this machine the way a user starts one (one head, one
node joining it, each declaring its virtual devices with the `rlinf_devices` resource), with
`python -m rlinf.run ... cluster.address=<head>` as a user runs it.

- The groups span both nodes (`devices.json` names two node ids, the cluster's own) and their gloo
  process groups connect across them; every training and evaluation metric equals the single-node run's.
- A node stopped mid-run: the run stops on its own, naming the lost node (exit 1), and `--resume`
  continues from the newest checkpoint once a node is back, to the last step.
"""

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
# Two ranks of each group, one per node: the actor's FSDP group and the rollout's span the nodes.
TINY = ["--config", "configs/grpo_arith.yaml", "cluster.num_devices=2", "runner.eval_interval=2",
        "runner.log_interval=1", "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false",
        "runner.timeline=false", "data.batch_size=8", "algorithm.group_size=4", "data.eval_size=16"]
# Bound on the whole stop (failure seen, node confirmed lost, groups stopped). Ray marks a node dead
# after its missed health checks (15-20 s here), so this leaves room on a loaded machine.
STOP_BOUND_S = 90


class TwoNodes:
    """The cluster process of tests/multinode_cluster.py: its address and node ids, and commands."""

    def __init__(self):
        env = {**os.environ, "RAY_AUTH_MODE": "token", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.multinode_cluster"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        first = self._answer()
        self.address, self.head, self.worker = first["address"], first["head"], first["worker"]

    def _answer(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                assert line, "the cluster process exited"
                if line.startswith("CLUSTER "):
                    return json.loads(line[len("CLUSTER "):])
        raise TimeoutError(f"the cluster process did not answer within {timeout} s")

    def command(self, what: str) -> dict:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if "worker" in answer:
            self.worker = answer["worker"]
        return answer

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def two_nodes():
    nodes = TwoNodes()
    try:
        yield nodes
    finally:
        nodes.close()


def _run(args, out: Path, log: Path, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if any(a.startswith("cluster.address=") for a in args):
        env["RAY_AUTH_MODE"] = "token"  # as the user's shell that started the nodes
    cmd = [sys.executable, "-m", "rlinf.run", *args, f"runner.output_dir={out}"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    if wait:
        proc.wait(timeout=480)
    return proc


def _metrics(out: Path):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


def _node_ids(out: Path, start: int = -1):
    return [d["node_id"] for d in json.loads((out / "devices.json").read_text())[start]["devices"]]


def test_run_spans_two_nodes_and_matches_the_single_node_run(tmp_path, two_nodes):
    cluster = two_nodes
    multi, single = tmp_path / "multi", tmp_path / "single"
    args = TINY + ["runner.max_steps=2", "runner.save_interval=0"]
    p = _run(args + [f"cluster.address={cluster.address}"], multi, tmp_path / "multi.log")
    assert p.returncode == 0, (tmp_path / "multi.log").read_text()[-3000:]
    p = _run(args, single, tmp_path / "single.log")
    assert p.returncode == 0, (tmp_path / "single.log").read_text()[-3000:]
    # device 0 on the head node, device 1 on the node that joined it
    assert _node_ids(multi) == [cluster.head, cluster.worker]
    assert len(set(_node_ids(single))) == 1
    rows = _metrics(multi)
    assert [r["step"] for r in rows] == [0, 1, 2, 2]  # the last step's training row and its evaluation
    assert rows == _metrics(single)


def _saved_steps(out: Path):
    return sorted(int(p.parent.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*/COMPLETE"))


def _wait_for_a_checkpoint(out: Path, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _saved_steps(out):
        assert proc.poll() is None, "the run ended before it saved a checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.5)


def test_a_lost_node_stops_the_run_naming_it_and_resume_continues(tmp_path, two_nodes):
    cluster = two_nodes
    out, log = tmp_path / "run", tmp_path / "run.log"
    args = TINY + ["runner.save_interval=2", "runner.max_restarts=1", f"cluster.address={cluster.address}"]
    proc = _run(args + ["runner.max_steps=1000"], out, log, wait=False)  # stopped long before its end
    try:
        _wait_for_a_checkpoint(out, proc, timeout=300)
        lost_id = cluster.command("remove")["removed"]
        proc.wait(timeout=STOP_BOUND_S)  # raises if the run does not stop on its own
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 1, text[-3000:]
    assert f"lost node {lost_id}" in text, text[-3000:]  # named, and not restarted around
    saved = _saved_steps(out)

    back = cluster.command("add")["worker"]
    last = saved[-1] + 4
    resumed = _run(["--resume", str(out), *args, f"runner.max_steps={last}"], out, tmp_path / "resume.log")
    assert resumed.returncode == 0, (tmp_path / "resume.log").read_text()[-3000:]
    s = saved[-1]  # the resumed run redoes every step after its checkpoint once, then the final evaluation
    assert [r["step"] for r in _metrics(out) if r["step"] > s] == [s + 1, s + 2, s + 3, s + 4, s + 4]
    assert json.loads((out / "summary.json").read_text())["restarts"] == 0
    assert _node_ids(out) == [cluster.head, back]
    assert json.loads((out / "devices.json").read_text())[-1]["start_step"] == saved[-1]
