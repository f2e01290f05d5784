"""Async schedule checkpoints without Ray: the producer is quiesced before the workflow's state is
written (it finishes what the published weights admit, then nothing runs), the queued batches are saved
with their versions and re-queued on resume, and the producer continues after them."""

import threading

import numpy as np
import pytest
import torch

from rlinf.errors import InputError
from rlinf.runners import checkpoints
from rlinf.runners.schedules import AsyncSchedule, SyncSchedule
from rlinf.scheduler.worker_group import WaitTimeoutError
from tests.unit.test_schedules import _Workflow, local_channel  # noqa: F401 - the fixture


class _CkptWorkflow(_Workflow):
    """Records what was collected when its state was saved; fails if a collect runs meanwhile."""

    def __init__(self, gate=None):
        super().__init__(gate)
        self.saving = False
        self.saved_collected = None

    def collect(self, step):
        assert not self.saving, "collect ran while the checkpoint captured the workflow's state"
        batch = super().collect(step)
        batch["obs"] = np.full((2, 3), step, np.float32)  # numpy travels through schedule.pt
        return batch

    def save_checkpoint(self, path):
        self.saving = True
        try:
            self.saved_collected = list(self.collected)
        finally:
            self.saving = False


def _train(sched, wf, steps):
    out = []
    for step in steps:
        out.append(sched.next_batch(wf, step))
        wf.version += 1
        sched.after_update(wf, step)
    return out


def _accounting(summary, consumed):
    dropped = sum(v for k, v in summary.items() if k.startswith("dropped/"))
    assert summary["consumed"] == consumed and summary["produced"] == consumed + dropped


@pytest.mark.parametrize("s", [0, 1, 2])
def test_save_then_resume_continues_the_stream(local_channel, tmp_path, s):
    k, n = 3, 8
    wf, sched = _CkptWorkflow(), AsyncSchedule(max_staleness=s, timeout_s=30)
    sched.start(wf, 0, n)
    _train(sched, wf, range(k))
    sched.save_checkpoint(wf, str(tmp_path))
    # every batch that version k admits was produced before the state was captured: steps k .. k + s
    assert wf.saved_collected == list(range(k + s + 1))
    state = checkpoints.load_state(tmp_path / "schedule.pt")
    assert state["step"] == k and state["next_step"] == k + s + 1
    assert [b["step"] for b in state["batches"]] == list(range(k, k + s + 1))
    assert all(b["step"] - s <= b["version"] <= k for b in state["batches"])
    assert state["batches"][0]["batch"]["obs"].dtype == np.float32
    uninterrupted = _train(sched, wf, range(k, n))
    sched.stop(wf)
    _accounting(sched.summary, n)

    wf2, resumed = _CkptWorkflow(), AsyncSchedule(max_staleness=s, timeout_s=30)
    wf2.version = k  # as load_checkpoint leaves it
    resumed.load_checkpoint(str(tmp_path), k)
    resumed.start(wf2, k, n)
    got = _train(resumed, wf2, range(k, n))
    resumed.stop(wf2)
    assert [b["step"] for b in got] == list(range(k, n))
    assert wf2.collected == list(range(k + s + 1, n))  # the saved batches are not generated again
    for a, b in zip(uninterrupted, got):
        assert np.array_equal(a["obs"], b["obs"]) and a["channel_staleness"] == b["channel_staleness"]
    assert all(b["channel_staleness"] <= s for b in got)
    assert resumed.summary["restored"] == s + 1
    _accounting(resumed.summary, n - k)


def _checkpoint_after(path, max_staleness: int, max_steps: int, trained: int) -> None:
    """An async run of `max_steps` that trains `trained` steps, checkpoints into `path` and stops."""
    wf, sched = _CkptWorkflow(), AsyncSchedule(max_staleness=max_staleness, timeout_s=30)
    sched.start(wf, 0, max_steps)
    _train(sched, wf, range(trained))
    sched.save_checkpoint(wf, str(path))
    sched.stop(wf)


def test_resume_with_tighter_bound_regenerates(local_channel, tmp_path, caplog):
    _checkpoint_after(tmp_path, max_staleness=2, max_steps=6, trained=2)
    wf2, resumed = _CkptWorkflow(), AsyncSchedule(max_staleness=0, timeout_s=30)
    wf2.version = 2
    resumed.load_checkpoint(str(tmp_path), 2)
    assert "generated again from step 2" in caplog.text
    resumed.start(wf2, 2, 6)
    assert [b["step"] for b in _train(resumed, wf2, range(2, 6))] == [2, 3, 4, 5]
    resumed.stop(wf2)
    assert wf2.collected == [2, 3, 4, 5] and resumed.summary["restored"] == 0


def test_checkpoint_of_another_step_is_input_error(local_channel, tmp_path):
    _checkpoint_after(tmp_path, max_staleness=1, max_steps=4, trained=1)
    with pytest.raises(InputError, match="saved at step 1"):
        AsyncSchedule(max_staleness=1, timeout_s=30).load_checkpoint(str(tmp_path), 2)


def test_sync_schedule_ignores_queued_batches_with_a_warning(local_channel, tmp_path, caplog):
    _checkpoint_after(tmp_path, max_staleness=1, max_steps=4, trained=1)
    SyncSchedule().load_checkpoint(str(tmp_path), 1)
    assert "not used" in caplog.text


def test_quiesce_has_a_deadline(local_channel, tmp_path):
    """A producer stuck in collect: the checkpoint fails with WaitTimeoutError instead of capturing a
    state the producer is changing, or hanging."""
    release = threading.Event()
    wf = _CkptWorkflow(gate=lambda step: step == 1 and release.wait(timeout=30))
    sched = AsyncSchedule(max_staleness=1, timeout_s=0.3)
    sched.start(wf, 0, 3)
    _train(sched, wf, range(1))
    with pytest.raises(WaitTimeoutError, match="checkpointable"):
        sched.save_checkpoint(wf, str(tmp_path))
    assert wf.saved_collected is None
    release.set()
    sched.stop(wf)


def test_producer_error_fails_the_checkpoint(local_channel, tmp_path):
    def gate(step):
        if step == 1:
            raise RuntimeError("env rank died")

    wf, sched = _CkptWorkflow(gate), AsyncSchedule(max_staleness=1, timeout_s=30)
    sched.start(wf, 0, 3)
    _train(sched, wf, range(1))
    with pytest.raises(RuntimeError, match="env rank died"):
        sched.save_checkpoint(wf, str(tmp_path))
    assert wf.saved_collected is None
    sched.stop(wf)


def test_state_file_round_trip(tmp_path):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2], "b": np.array([True, False]),
           "s": np.float32(1.5), "d": np.float64(2.5), "o": np.array(["x", "yy"], dtype=object),
           "t": torch.arange(3), "tu": (1, "x"), "l": [[1, 2], [3]], "e": np.zeros((0, 4), np.int64), "n": None}
    checkpoints.save_state(tmp_path / "f.pt", obj)
    back = checkpoints.load_state(tmp_path / "f.pt")
    for key in ("a", "b", "o", "e"):
        assert back[key].dtype == obj[key].dtype and np.array_equal(back[key], obj[key])
    assert type(back["s"]) is np.float32 and type(back["d"]) is np.float64 and back["s"] == 1.5
    assert torch.equal(back["t"], obj["t"]) and back["tu"] == (1, "x") and back["l"] == [[1, 2], [3]]
    assert back["n"] is None and back["a"].flags.writeable
    with pytest.raises(TypeError):
        checkpoints.save_state(tmp_path / "g.pt", {"x": object()})
