"""Schedules: when rollouts happen relative to updates. The runner's loop is the same for all.

A schedule implements `start(workflow, start_step, max_steps)`, `next_batch(workflow, step)`,
`after_update(workflow, step)` and `stop(workflow)`; the workflow supplies `sync_weights()`,
`collect(step)`, `train(batch)`, `evaluate()` and the counters `version` (updates done) and
`synced_version` (weights the rollout ranks hold).
"""

import logging
import threading
import uuid
from typing import Optional

from rlinf.channel import Channel, ChannelClosed
from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import Placement

logger = logging.getLogger(__name__)


class SyncSchedule:
    """On-policy: sync weights, generate and score the step's batch, then train on it."""

    name = "sync"
    summary: dict = {}

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
    (s = algorithm.max_staleness), so the actor at version c trains on data from version >= c - s,
    and no finished batch is ever dropped. Before each batch the producer loads the newest actor
    weights if an update finished since its last sync (between requests: generation is never
    interrupted); the training loop publishes weights right after each update (see WeightSync).
With s = 0 this reproduces the sync schedule step for step.
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
        self.base_version = 0
        self.summary: dict = {}

    def start(self, workflow, start_step: int, max_steps: int) -> None:
        self.channel = Channel.create(f"rollout-to-actor-{uuid.uuid4().hex[:8]}", max_staleness=self.max_staleness,
                                      batch_size=1, default_timeout=self.timeout_s)
        # Channel versions count from this run segment's first weights (a resumed run starts at its step).
        self.base_version = workflow.version
        workflow.publish_weights()
        self.thread = threading.Thread(target=self._produce, args=(workflow, start_step, max_steps),
                                       name="rlinf-rollout-producer", daemon=True)
        self.thread.start()

    def _wait_for_version(self, workflow, needed: int) -> bool:
        """Block until the training loop has published weights of relative version >= needed."""
        with self._published:
            while workflow.weights.published_version - self.base_version < needed:
                if self._stop.is_set():
                    return False
                self._published.wait(timeout=1.0)
        return True

    def _produce(self, workflow, start_step: int, max_steps: int) -> None:
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
                self.channel.put(batch, version=version, producer="rollout")
        except ChannelClosed:
            return
        except BaseException as e:  # handed to the training loop, which re-raises it
            self.error = e
            self.channel.close()

    def next_batch(self, workflow, step: int):
        try:
            envelope = self.channel.get_with_meta(timeout=self.timeout_s)
        except ChannelClosed:
            if self.error is not None:
                raise self.error
            raise
        batch = envelope.item
        batch["channel_staleness"] = envelope.staleness
        return batch

    def after_update(self, workflow, step: int) -> None:
        # Publish while the actor is idle; the producer loads it before its next batch.
        workflow.publish_weights()
        with self._published:
            self._published.notify_all()

    def stop(self, workflow) -> None:
        self._stop.set()
        with self._published:
            self._published.notify_all()
        if self.channel is not None:
            self.channel.close()
        if self.thread is not None:
            self.thread.join(timeout=self.timeout_s)
        if self.channel is not None:
            stats = self.channel.stats()
            # Staleness of every consumed batch, {staleness: count}, for the run summary.
            self.summary = {"staleness_histogram": {str(k): v for k, v in stats["staleness_histogram"].items()},
                            "max_staleness_seen": stats["max_staleness_seen"], "bound": self.max_staleness}
            self.channel.destroy()


def make_schedule(cfg: RLinfConfig, placement: Placement):
    name = cfg.runner.schedule
    if name == "auto":
        name = "sync" if cfg.algorithm.max_staleness == 0 else "async"
    if name == "sync":
        return SyncSchedule()
    if name == "async":
        return AsyncSchedule(cfg.algorithm.max_staleness, cfg.cluster.wait_timeout_s)
    raise InputError(f"schedule '{name}' is not available yet (available: sync, async)", key="runner.schedule")
