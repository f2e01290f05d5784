"""Schedules without Ray: the async schedule's batch accounting (every finished batch is consumed or
counted under `dropped/<why>`), its bounded wait for weights, and per-instance state."""

import threading
from types import SimpleNamespace

import pytest

from rlinf.channel import ChannelClosed, ChannelCore, ChannelTimeout
from rlinf.runners import schedules
from rlinf.runners.schedules import DROP_REASONS, AsyncSchedule, SyncSchedule
from rlinf.scheduler.worker_group import WaitTimeoutError


class _LocalChannel:
    """The `Channel` client API the schedule uses, over a `ChannelCore` in this process."""

    def __init__(self, max_staleness, batch_size):
        self.core = ChannelCore(0, max_staleness, batch_size)
        self.cond = threading.Condition()
        self.destroyed = False

    @classmethod
    def create(cls, name, capacity=0, max_staleness=None, batch_size=1, default_timeout=600.0):
        cls.last = cls(max_staleness, batch_size)
        return cls.last

    def _until(self, attempt, timeout):
        with self.cond:
            if not self.cond.wait_for(attempt, timeout=timeout):
                raise ChannelTimeout("timed out")
            self.cond.notify_all()

    def admit(self, version, n=1, timeout=None):
        def attempt():
            if self.core.closed:
                raise ChannelClosed("closed")
            return self.core.try_admit(version, n)
        self._until(attempt, timeout)

    def put(self, item, version=0, producer=None, timeout=None):
        with self.cond:
            self.core.put([item], version, producer)  # ChannelClosed (counted) after close
            self.cond.notify_all()

    def get_with_meta(self, timeout=None):
        out = []

        def attempt():
            got = self.core.get(1)
            if got:
                out.extend(got)
            return bool(got)
        self._until(attempt, timeout)
        return out[0]

    def close(self):
        with self.cond:
            self.core.close()
            self.cond.notify_all()

    def stats(self):
        return self.core.stats()

    def destroy(self, reason="unconsumed_at_destroy"):
        with self.cond:
            self.core.discard(reason)
        self.destroyed = True
        return self.core.stats()


class _Workflow:
    """Counters the schedule reads; `collect(step)` returns a batch after `gate` lets it through."""

    def __init__(self, gate=None):
        self.version = 0
        self.synced_version = 0
        self.weights = SimpleNamespace(published_version=0)
        self.collected = []
        self.gate = gate

    def publish_weights(self):
        self.weights.published_version = self.version

    def sync_weights(self, publish=True):
        self.synced_version = self.weights.published_version

    def collect(self, step):
        if self.gate is not None:
            self.gate(step)
        self.collected.append(step)
        return {"step": step}


@pytest.fixture
def local_channel(monkeypatch):
    monkeypatch.setattr(schedules, "Channel", _LocalChannel)
    return _LocalChannel


def _accounting(summary):
    return summary["produced"], summary["consumed"], {k: v for k, v in summary.items() if k.startswith("dropped/")}


def test_all_batches_consumed_nothing_dropped(local_channel):
    wf, sched = _Workflow(), AsyncSchedule(max_staleness=1, timeout_s=30)
    sched.start(wf, 0, 4)
    for step in range(4):
        assert sched.next_batch(wf, step)["step"] == step
        wf.version += 1
        sched.after_update(wf, step)
    sched.stop(wf)
    assert _accounting(sched.summary) == (4, 4, {f"dropped/{r}": 0 for r in DROP_REASONS})
    assert local_channel.last.destroyed


def test_early_stop_counts_queued_and_late_batches(local_channel, caplog):
    """The training loop stops after 1 of 5 steps (early stopping): batch 1 is queued, batch 2 is being
    generated and finishes after stop. Both are counted, with a log line."""
    release = threading.Event()
    started_2 = threading.Event()

    def gate(step):
        if step == 2:
            started_2.set()
            release.wait(timeout=30)

    wf, sched = _Workflow(gate), AsyncSchedule(max_staleness=2, timeout_s=30)
    sched.start(wf, 0, 5)
    assert sched.next_batch(wf, 0)["step"] == 0
    wf.version += 1
    sched.after_update(wf, 0)
    assert started_2.wait(timeout=30)
    stopper = threading.Thread(target=sched.stop, args=(wf,))
    stopper.start()
    while not local_channel.last.core.closed:  # stop closed the channel (it now joins the producer)
        stopper.join(timeout=0.01)
    release.set()  # batch 2 finishes after close: its put is refused and counted
    stopper.join(timeout=30)
    assert not stopper.is_alive()
    produced, consumed, dropped = _accounting(sched.summary)
    assert (produced, consumed) == (3, 1)
    assert dropped == {"dropped/put_after_close": 1, "dropped/unconsumed_at_stop": 1, "dropped/put_failed": 0}
    assert produced == consumed + sum(dropped.values())
    assert "put_after_close" in caplog.text and "unconsumed_at_stop" in caplog.text


def test_failed_put_is_counted_and_raised_to_the_training_loop(local_channel, monkeypatch):
    wf, sched = _Workflow(), AsyncSchedule(max_staleness=0, timeout_s=30)

    def broken_put(self, item, version=0, producer=None, timeout=None):
        raise ChannelTimeout("no answer")

    monkeypatch.setattr(_LocalChannel, "put", broken_put)
    sched.start(wf, 0, 3)
    with pytest.raises(ChannelTimeout):
        sched.next_batch(wf, 0)
    sched.stop(wf)
    produced, consumed, dropped = _accounting(sched.summary)
    assert (produced, consumed, dropped["dropped/put_failed"]) == (1, 0, 1)


def test_wait_for_weights_has_a_deadline(local_channel):
    """The producer, s + 1 batches ahead, waits for weights the training loop never publishes: the
    wait ends with WaitTimeoutError (handed to the training loop), not a hang."""
    wf, sched = _Workflow(), AsyncSchedule(max_staleness=0, timeout_s=0.3)
    sched.start(wf, 0, 3)
    assert sched.next_batch(wf, 0)["step"] == 0  # then no update is ever published
    sched.thread.join(timeout=30)
    assert not sched.thread.is_alive()
    assert isinstance(sched.error, WaitTimeoutError) and "version 1" in str(sched.error)
    with pytest.raises(WaitTimeoutError):
        sched.next_batch(wf, 1)
    sched.stop(wf)
    assert wf.collected == [0]


def test_wait_for_weights_returns_at_stop(local_channel):
    wf, sched = _Workflow(), AsyncSchedule(max_staleness=0, timeout_s=30)
    sched.start(wf, 0, 3)
    assert sched.next_batch(wf, 0)["step"] == 0
    sched.stop(wf)
    assert not sched.thread.is_alive() and sched.error is None
    assert _accounting(sched.summary)[:2] == (1, 1)


def test_sync_schedule_summary_is_per_instance():
    a, b = SyncSchedule(), SyncSchedule()
    a.summary["x"] = 1
    assert b.summary == {} and "summary" not in vars(SyncSchedule)
