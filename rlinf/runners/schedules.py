"""Schedules: when rollouts happen relative to updates. The runner's loop is the same for all.

A schedule implements `start(workflow, start_step, max_steps)`, `next_batch(workflow, step)`,
`after_update(workflow, step)` and `stop(workflow)`; the workflow supplies `sync_weights()`,
`collect(step)`, `train(batch)`, `evaluate()` and the counters `version` (updates done) and
`synced_version` (weights the rollout ranks hold).
"""

import logging
import threading
import time
import uuid
from collections import Counter
from typing import Optional

from rlinf.channel import Channel, ChannelClosed, ChannelGone
from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import Placement
from rlinf.scheduler.worker_group import WaitTimeoutError

logger = logging.getLogger(__name__)

# Why a finished batch can fail to reach training; the async summary always has `dropped/<reason>` for these.
DROP_REASONS = ("put_after_close", "unconsumed_at_stop", "put_failed")


class SyncSchedule:
    """On-policy: sync weights, generate and score the step's batch, then train on it."""

    name = "sync"

    def __init__(self):
        self.summary: dict = {}  # per instance: nothing to report, but never shared between runs

    def start(self, workflow, start_step: int, max_steps: int) -> None:
        pass

    def next_batch(self, workflow, step: int):
        workflow.sync_weights()
        return workflow.collect(step)

    def after_update(self, workflow, step: int) -> None:
        pass

    def stop(self, workflow) -> None:
        pass


class AsyncSchedule:
    """Rollouts stream into a channel from a producer thread while the actor trains.

    One channel item is one step's batch. The channel's admission control bounds staleness: the
    producer, holding weights of version v, may start batch k only while k < v + s + 1
    (s = algorithm.max_staleness), so the actor at version c trains on data from version >= c - s.
    Before each batch the producer loads the newest actor weights if an update finished since its
    last sync (between requests: generation is never interrupted); the training loop publishes
    weights right after each update (see WeightSync). With s = 0 this reproduces the sync schedule
    step for step.

    No finished batch vanishes silently: each one is consumed by the training loop or counted in
    `summary` under `dropped/<why>` with a log line (`put_after_close`: finished after the run
    stopped; `unconsumed_at_stop`: queued when the run stopped, e.g. after early stopping;
    `put_failed`: its put failed and the run fails with that error), and
    `summary["produced"] == summary["consumed"] + sum(dropped)`.
    Every wait is bounded by `timeout_s`: the producer's wait for published weights raises
    `WaitTimeoutError` when the training loop shows no progress for that long.
    """

    name = "async"

    def __init__(self, max_staleness: int, timeout_s: float):
        self.max_staleness = max_staleness
        self.timeout_s = timeout_s
        self.channel: Optional[Channel] = None
        self.thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._published = threading.Condition()
        self._progress = time.monotonic()  # last sign of life of the training loop
        self._lock = threading.Lock()
        self._produced_not_put = 0  # batches finished but never offered to the channel
        self._local_dropped: Counter = Counter()
        self.base_version = 0
        self.summary: dict = {}

    def start(self, workflow, start_step: int, max_steps: int) -> None:
        self.channel = Channel.create(f"rollout-to-actor-{uuid.uuid4().hex[:8]}", max_staleness=self.max_staleness,
                                      batch_size=1, default_timeout=self.timeout_s)
        # Channel versions count from this run segment's first weights (a resumed run starts at its step).
        self.base_version = workflow.version
        workflow.publish_weights()
        self._progress = time.monotonic()
        self.thread = threading.Thread(target=self._produce, args=(workflow, start_step, max_steps),
                                       name="rlinf-rollout-producer", daemon=True)
        self.thread.start()

    def _mark_progress(self) -> None:
        self._progress = time.monotonic()

    def _wait_for_version(self, workflow, needed: int) -> bool:
        """Block until the training loop has published weights of relative version >= needed.
        False once the schedule stops; WaitTimeoutError after `timeout_s` without training-loop
        progress (no batch taken, no update finished)."""
        with self._published:
            while workflow.weights.published_version - self.base_version < needed:
                if self._stop.is_set():
                    return False
                left = self._progress + self.timeout_s - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(
                        f"async schedule: the rollout producer waited {self.timeout_s:g} s for weights of version "
                        f"{needed + self.base_version} (published: {workflow.weights.published_version}) "
                        f"without progress of the training loop", timeout=self.timeout_s)
                self._published.wait(timeout=min(left, 1.0))
        return True

    def _produce(self, workflow, start_step: int, max_steps: int) -> None:
        batch = None  # a finished batch not yet accepted by the channel
        try:
            for step in range(start_step, max_steps):
                # Batch i of this segment is admitted only with weights of version >= i - s; wait for
                # them to be published instead of polling the channel.
                if not self._wait_for_version(workflow, step - start_step - self.max_staleness):
                    return
                workflow.sync_weights(publish=False)  # load what the training loop published
                version = workflow.synced_version - self.base_version
                self.channel.admit(version, timeout=self.timeout_s)
                batch = workflow.collect(step)
                self.channel.put(batch, version=version, producer="rollout", timeout=self.timeout_s)
                batch = None
        except ChannelGone:
            if batch is not None:  # the channel actor is gone: it could not count this batch
                self._count_local_drop("put_after_close", "the channel was destroyed before its put")
        except ChannelClosed:
            return  # closed: the channel refused (and counted) a batch put after close
        except BaseException as e:  # handed to the training loop, which re-raises it
            if batch is not None:
                self._count_local_drop("put_failed", f"{type(e).__name__}: {e}")
            self.error = e
            self.channel.close()

    def _count_local_drop(self, reason: str, why: str) -> None:
        with self._lock:
            self._produced_not_put += 1
            self._local_dropped[reason] += 1
            logger.warning("async schedule: dropped a finished rollout batch (%s): %s", reason, why)
            if "produced" in self.summary:  # after stop: keep the summary's counts whole
                self.summary["produced"] += 1
                key = f"dropped/{reason}"
                self.summary[key] = self.summary.get(key, 0) + 1

    def next_batch(self, workflow, step: int):
        self._mark_progress()
        try:
            envelope = self.channel.get_with_meta(timeout=self.timeout_s)
        except ChannelClosed:
            if self.error is not None:
                raise self.error
            raise
        self._mark_progress()
        batch = envelope.item
        batch["channel_staleness"] = envelope.staleness
        return batch

    def after_update(self, workflow, step: int) -> None:
        # Publish while the actor is idle; the producer loads it before its next batch.
        workflow.publish_weights()
        self._mark_progress()
        with self._published:
            self._published.notify_all()

    def stop(self, workflow) -> None:
        self._stop.set()
        with self._published:
            self._published.notify_all()
        if self.channel is not None:
            self.channel.close()  # a batch the producer finishes from now on is refused and counted
        if self.thread is not None:
            self.thread.join(timeout=self.timeout_s)
            if self.thread.is_alive():
                logger.warning("async schedule: the rollout producer is still running %g s after stop",
                               self.timeout_s)
        if self.channel is not None:
            stats = self.channel.destroy(reason="unconsumed_at_stop")  # counts and logs what is queued
            self.summary = self._summarize(stats)
            drops = {k: v for k, v in self.summary.items() if k.startswith("dropped/") and v}
            if drops:
                logger.warning("async schedule: finished batches dropped: %s (produced %d, consumed %d)",
                               drops, self.summary["produced"], self.summary["consumed"])

    def _summarize(self, stats: Optional[dict]) -> dict:
        """Staleness of every consumed batch ({staleness: count}) and the batch accounting:
        produced == consumed + sum of `dropped/<why>`."""
        with self._lock:
            summary = {"bound": self.max_staleness, "produced": self._produced_not_put, "consumed": 0}
            dropped = Counter(self._local_dropped)
            if stats is not None:
                summary.update({
                    "staleness_histogram": {str(k): v for k, v in stats["staleness_histogram"].items()},
                    "max_staleness_seen": stats["max_staleness_seen"],
                    "produced": self._produced_not_put + stats["produced"],
                    "consumed": stats["consumed"],
                })
                dropped.update(stats["dropped"])
                if stats["qsize"]:  # cannot happen after discard; never let an item go uncounted
                    dropped["unconsumed_at_stop"] += stats["qsize"]
            for reason in DROP_REASONS:
                summary[f"dropped/{reason}"] = dropped.pop(reason, 0)
            summary.update({f"dropped/{reason}": n for reason, n in dropped.items()})
            return summary


def make_schedule(cfg: RLinfConfig, placement: Placement):
    name = cfg.runner.schedule
    if name == "auto":
        name = "sync" if cfg.algorithm.max_staleness == 0 else "async"
    if name == "sync":
        return SyncSchedule()
    if name == "async":
        return AsyncSchedule(cfg.algorithm.max_staleness, cfg.cluster.wait_timeout_s)
    raise InputError(f"schedule '{name}' is not available yet (available: sync, async)", key="runner.schedule")
