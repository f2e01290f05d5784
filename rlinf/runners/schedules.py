"""Schedules: when rollouts happen relative to updates. The runner's loop is the same for all.

A schedule implements `start(workflow, start_step, max_steps)`, `next_batch(workflow, step)`,
`after_update(workflow, step)`, `stop(workflow)` and the checkpoint hooks
`save_checkpoint(workflow, path)` (writes the workflow's checkpoint and the schedule's own state) and
`load_checkpoint(path, step)` (before `start`, when resuming); the workflow supplies `sync_weights()`,
`collect(step)`, `train(batch)`, `evaluate()`, `save_checkpoint(path)` and the counters `version`
(updates done) and `synced_version` (weights the rollout ranks hold).
"""

import logging
import threading
import time
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import Deque, List, Optional, Tuple

from rlinf.channel import Channel, ChannelClosed, ChannelGone
from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import Placement
from rlinf.runners import checkpoints
from rlinf.runners.residency import Residency
from rlinf.scheduler.worker_group import WaitTimeoutError

logger = logging.getLogger(__name__)

# Why a finished batch can fail to reach training; the async summary always has `dropped/<reason>` for these.
DROP_REASONS = ("put_after_close", "unconsumed_at_stop", "put_failed")

SCHEDULE_STATE = "schedule.pt"  # in a checkpoint directory: the async schedule's queued batches
_STATE_FORMAT = 1


def _saved_batches(path: str) -> Optional[dict]:
    file = Path(path) / SCHEDULE_STATE
    return checkpoints.load_state(file) if file.exists() else None


class SyncSchedule:
    """On-policy: sync weights, generate and score the step's batch, then train on it. In colocated
    placement it owns residency (`rlinf.runners.residency`): before each phase the groups the phase
    does not need leave the devices it uses, and those it needs come back."""

    name = "sync"

    def __init__(self, residency: Optional[Residency] = None, collect_ahead: bool = False):
        self.summary: dict = {}  # per instance (never shared between runs): `dropped/...` when a stop drops a batch
        self.residency = residency
        self.collect_ahead = collect_ahead

    def enter(self, workflow, phase: str) -> None:
        """Make the groups `phase` needs resident (see rlinf.runners.residency); the runner calls it
        before an evaluation, `next_batch` before each of its own phases."""
        if self.residency is not None:
            self.residency.enter(phase, workflow.groups)

    def start(self, workflow, start_step: int, max_steps: int) -> None:
        # Without residency changes an update is always followed by a weight sync: a workflow that can
        # issue that sync behind the update itself (WeightSyncMixin) is told so.
        if hasattr(workflow, "load_weights_after_update"):
            workflow.load_weights_after_update = self.residency is None
        # Then the next step's generation can be issued behind that sync too (runner.collect_ahead); a batch
        # issued for a step that never runs is counted as dropped at stop.
        if getattr(workflow, "collects_ahead", False):
            ahead = self.collect_ahead and self.residency is None
            workflow.collect_ahead_until = max_steps if ahead else None

    def next_batch(self, workflow, step: int):
        self.enter(workflow, "sync_weights")
        workflow.sync_weights()
        self.enter(workflow, "collect")
        batch = workflow.collect(step)
        self.enter(workflow, "train")  # the runner trains on the batch next
        return batch

    def after_update(self, workflow, step: int) -> None:
        pass

    def stop(self, workflow) -> None:
        dropped = workflow.discard_ahead() if hasattr(workflow, "discard_ahead") else 0
        if dropped:
            key = "dropped/unconsumed_at_stop"
            self.summary[key] = self.summary.get(key, 0) + dropped

    def save_checkpoint(self, workflow, path: str) -> None:
        # Between steps only a generation issued ahead can be in flight; it changes no state a checkpoint holds
        # (rollout ranks keep none, and its scoring waits for the next collect): the workflow's state is all.
        workflow.save_checkpoint(path)

    def load_checkpoint(self, path: str, step: int) -> None:
        state = _saved_batches(path)
        if state is not None and state["batches"]:
            logger.warning("resuming under the sync schedule from an async checkpoint: its %d queued batch(es) "
                           "(steps %s) are not used; the sync schedule generates step %d anew from the saved state",
                           len(state["batches"]), [b["step"] for b in state["batches"]], step)


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

    Checkpoints (`save_checkpoint`, at the end of a training step, weights of version k published):
    in-flight batches are SAVED, not regenerated. The producer is first quiesced: the training loop
    is blocked in the save, so no newer weights can appear, and the producer keeps producing every
    batch that is admissible with the weights already published (up to step k + s, fewer near
    max_steps) until it blocks waiting for version k + 1 (or runs out of steps); the schedule waits
    for that with a deadline (`timeout_s` without a finished batch). Then nothing touches the
    rollout or env workers, so the workflow's checkpoint (actor, env state, observations, rollout
    RNG) is the state after the last produced batch, and `schedule.pt` next to it holds the queued,
    not yet trained batches (steps k .. p-1, each with the absolute weight version that generated
    it) and the producer's next step p. Which batches are queued is thus a function of k, s and
    max_steps, not of thread timing. A resumed run (`load_checkpoint`, then `start`) re-queues them
    into its channel with the same versions (relative to the new segment's base k, so admission and
    the staleness each one is consumed at are those of the uninterrupted run), and the producer
    continues at step p, waiting for version p - s as the uninterrupted producer did.

    Exactness. The batches trained right after a resume are the saved ones, bit for bit: those
    steps reproduce the uninterrupted run exactly for any s. Later batches are generated as in an
    uninterrupted run from identical state (weights, env state, RNG, step): the producer waits for
    version p - s and loads the newest published weights. With s = 0 that is exactly version p
    (admission allows nothing else), so the whole resumed run is bit-identical to the uninterrupted
    one (and to the sync schedule). With s >= 1 the newest published version when the producer
    wakes depends on thread timing, in an uninterrupted run just as in a resumed one; the resumed
    run is then exact in what the schedule guarantees: every step trained exactly once (the loop
    checks each batch's step), staleness within the bound, no batch lost or duplicated.
    Stopping a run (max_steps reached, a failure) after a checkpoint loses at most the steps since
    that checkpoint; batches queued at stop are counted as dropped (`unconsumed_at_stop`). Cost: the
    save waits for up to s + 1 collections, and with checkpoints on (`runner.save_interval` > 0) the
    controller keeps a reference to each queued batch (at most s + 1) until it is trained on.
    A checkpoint resumed under the sync schedule ignores the queued batches (with a warning), as does
    one resumed with a smaller max_staleness that a queued batch would exceed: the run then
    generates from step k again, from the saved env state.
    """

    name = "async"

    def enter(self, workflow, phase: str) -> None:
        """Nothing moves under the async schedule: its phases overlap (offload is for colocated sync runs)."""

    def __init__(self, max_staleness: int, timeout_s: float, checkpoints: bool = True):
        self.max_staleness = max_staleness
        self.timeout_s = timeout_s
        self.keep_for_checkpoint = checkpoints  # mirror the queued batches (needed to save them)
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
        # Checkpoint state. `_queued`: (step, absolute version, batch) of every batch put and not yet
        # taken by the training loop, in delivery order (one producer, versions never decrease).
        self._queued: Deque[Tuple[int, int, object]] = deque()
        self._next_produce = 0  # the producer's next step
        self._next_train = 0  # the training loop's next step
        self._waiting_for: Optional[int] = None  # relative version the producer is blocked on
        self._saving = False
        self._producer_done = False
        self._producer_progress = time.monotonic()
        self._resume: Optional[dict] = None  # saved batches to re-queue at start
        self._restored = 0

    def load_checkpoint(self, path: str, step: int) -> None:
        """Read the checkpoint's queued batches; `start` re-queues them. A checkpoint of the sync schedule
        (or one without queued batches) has none: the producer starts at `step`."""
        state = _saved_batches(path)
        self._resume = None
        if state is None:
            return
        if state["step"] != step:
            raise InputError(f"{SCHEDULE_STATE} was saved at step {state['step']}, the checkpoint is step {step}",
                             key=str(path))
        batches = state["batches"]
        if [b["step"] for b in batches] != list(range(step, step + len(batches))) or \
                state["next_step"] != step + len(batches):
            raise InputError(f"{SCHEDULE_STATE}: queued steps {[b['step'] for b in batches]} do not run from step "
                             f"{step} to the producer's next step {state['next_step']}", key=str(path))
        over = [b["step"] for b in batches if b["step"] - b["version"] > self.max_staleness]
        if over:  # resumed with a tighter bound: these cannot be admitted; regenerate from step `step`
            logger.warning("async checkpoint: queued batches of steps %s would exceed max_staleness %d; all %d "
                           "queued batch(es) are dropped and generated again from step %d", over,
                           self.max_staleness, len(batches), step)
            return
        self._resume = state

    def start(self, workflow, start_step: int, max_steps: int) -> None:
        self.channel = Channel.create(f"rollout-to-actor-{uuid.uuid4().hex[:8]}", max_staleness=self.max_staleness,
                                      batch_size=1, default_timeout=self.timeout_s)
        # Channel versions count from this run segment's first weights (a resumed run starts at its step).
        self.base_version = workflow.version
        self._next_train = self._next_produce = start_step
        workflow.publish_weights()
        if self._resume is not None:
            self._requeue(self._resume["batches"], start_step, max_steps)
            self._resume = None
        self._progress = self._producer_progress = time.monotonic()
        self.thread = threading.Thread(target=self._produce, args=(workflow, start_step, max_steps),
                                       name="rlinf-rollout-producer", daemon=True)
        self.thread.start()

    def _requeue(self, batches: List[dict], start_step: int, max_steps: int) -> None:
        """Queue a checkpoint's batches again, admitted and put with their versions relative to this
        segment's base, as the uninterrupted run had them queued."""
        for saved in batches:
            if saved["step"] >= max_steps:
                break  # resumed with a smaller max_steps: never trained
            version = saved["version"] - self.base_version
            self.channel.admit(version, timeout=self.timeout_s)  # admissible at once: it was when produced
            self._offer(saved["step"], version, saved["batch"])
            self._next_produce = saved["step"] + 1
            self._restored += 1
        if self._restored:
            logger.info("async schedule: re-queued %d batch(es) from the checkpoint (steps %d-%d); the producer "
                        "continues at step %d", self._restored, start_step, self._next_produce - 1, self._next_produce)

    def _offer(self, step: int, version: int, batch) -> None:
        """Put one batch (tagged with its step) and mirror it until the training loop takes it."""
        if self.keep_for_checkpoint:
            with self._lock:
                self._queued.append((step, version + self.base_version, batch))
        try:
            self.channel.put((step, batch), version=version, producer="rollout", timeout=self.timeout_s)
        except BaseException:
            if self.keep_for_checkpoint:
                with self._lock:
                    self._queued.pop()
            raise

    def _mark_progress(self) -> None:
        self._progress = time.monotonic()

    def _wait_for_version(self, workflow, needed: int) -> bool:
        """Block until the training loop has published weights of relative version >= needed.
        False once the schedule stops; WaitTimeoutError after `timeout_s` without training-loop
        progress (no batch taken, no update finished)."""
        with self._published:
            try:
                while workflow.weights.published_version - self.base_version < needed:
                    if self._stop.is_set():
                        return False
                    if self._waiting_for != needed:
                        self._waiting_for = needed  # idle until then: a checkpoint may capture the state now
                        self._published.notify_all()
                    if self._saving:  # the loop is saving a checkpoint: that is progress
                        self._progress = time.monotonic()
                    left = self._progress + self.timeout_s - time.monotonic()
                    if left <= 0:
                        raise WaitTimeoutError(
                            f"async schedule: the rollout producer waited {self.timeout_s:g} s for weights of "
                            f"version {needed + self.base_version} (published: {workflow.weights.published_version}) "
                            f"without progress of the training loop", timeout=self.timeout_s)
                    self._published.wait(timeout=min(left, 1.0))
            finally:
                self._waiting_for = None
        return True

    def _produce(self, workflow, start_step: int, max_steps: int) -> None:
        batch = None  # a finished batch not yet accepted by the channel
        try:
            for step in range(self._next_produce, max_steps):
                # Batch i of this segment is admitted only with weights of version >= i - s; wait for
                # them to be published instead of polling the channel. (A checkpoint's re-queued batches
                # count: the producer continues after them.)
                if not self._wait_for_version(workflow, step - start_step - self.max_staleness):
                    return
                workflow.sync_weights(publish=False)  # load what the training loop published
                version = workflow.synced_version - self.base_version
                self.channel.admit(version, timeout=self.timeout_s)  # never waits after the wait above
                batch = workflow.collect(step)
                self._offer(step, version, batch)
                batch = None
                with self._published:
                    self._next_produce = step + 1
                    self._producer_progress = time.monotonic()
                    self._published.notify_all()
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
        finally:
            with self._published:  # a checkpoint waiting for the producer to go idle sees it has ended
                self._producer_done = True
                self._published.notify_all()

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
        produced_step, batch = envelope.item
        if self.keep_for_checkpoint:
            with self._lock:
                self._queued.popleft()
        if produced_step != step:  # each step trains its own batch, exactly once
            raise RuntimeError(f"async schedule: training step {step} received the batch of step {produced_step}")
        self._next_train = step + 1
        batch["channel_staleness"] = envelope.staleness
        return batch

    def after_update(self, workflow, step: int) -> None:
        # Publish while the actor is idle; the producer loads it before its next batch.
        workflow.publish_weights()
        self._mark_progress()
        with self._published:
            self._published.notify_all()

    def save_checkpoint(self, workflow, path: str) -> None:
        """Quiesce the producer, write the workflow's checkpoint and `schedule.pt` (the queued batches and
        the producer's next step). Called by the training loop between steps (see the class docstring)."""
        if not self.keep_for_checkpoint:
            raise RuntimeError("async schedule created without checkpoint support (runner.save_interval = 0)")
        self._saving = True
        try:
            self._quiesce(workflow)
            with self._lock:
                queued = list(self._queued)
            next_produce = self._next_produce
            if [q[0] for q in queued] != list(range(self._next_train, next_produce)):
                raise RuntimeError(f"async schedule: queued steps {[q[0] for q in queued]} do not run from the "
                                   f"training loop's next step {self._next_train} to the producer's {next_produce}")
            workflow.save_checkpoint(path)
            checkpoints.save_state(Path(path) / SCHEDULE_STATE, {
                "format": _STATE_FORMAT, "schedule": self.name, "max_staleness": self.max_staleness,
                "step": self._next_train, "next_step": next_produce,
                "batches": [{"step": st, "version": v, "batch": b} for st, v, b in queued]})
        finally:
            self._saving = False
            self._mark_progress()

    def _quiesce(self, workflow) -> None:
        """Return once the producer is idle: blocked on weights that only the training loop (now saving)
        can publish, or finished. Until then it produces whatever is admissible with the published weights.
        WaitTimeoutError after `timeout_s` without a finished batch; the producer's own error is re-raised."""
        with self._published:
            self._producer_progress = time.monotonic()
            while True:
                if self.error is not None:
                    raise self.error
                if self._producer_done or self.thread is None or not self.thread.is_alive():
                    return
                needed = self._waiting_for
                if needed is not None and workflow.weights.published_version - self.base_version < needed:
                    return
                left = self._producer_progress + self.timeout_s - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(f"async schedule: the rollout producer did not reach a checkpointable "
                                           f"state within {self.timeout_s:g} s (step {self._next_produce})",
                                           timeout=self.timeout_s)
                self._published.wait(timeout=min(left, 1.0))

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
        produced == consumed + sum of `dropped/<why>` (`restored`: how many of the produced batches were
        re-queued from the checkpoint this run resumed from rather than generated in this run)."""
        with self._lock:
            summary = {"bound": self.max_staleness, "produced": self._produced_not_put, "consumed": 0,
                       "restored": self._restored}
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


def _residency(cfg: RLinfConfig, placement: Placement) -> Optional[Residency]:
    """The residency plan of a colocated run whose config lets groups offload (None otherwise)."""
    offloadable = set()
    if cfg.actor.offload:
        offloadable |= {"actor", "reference"}
    if cfg.critic.offload:
        offloadable.add("critic")
    if cfg.rollout.offload:
        offloadable.add("rollout")
    if not offloadable:
        return None
    if placement.mode != "colocated":
        logger.info("offload asked for in %s placement: groups on devices of their own never move", placement.mode)
    return Residency(placement.devices, offloadable)


def make_schedule(cfg: RLinfConfig, placement: Placement):
    name = cfg.runner.schedule
    if name == "auto":
        name = "sync" if cfg.algorithm.max_staleness == 0 else "async"
    if name == "sync":
        return SyncSchedule(_residency(cfg, placement), collect_ahead=cfg.runner.collect_ahead)
    if name == "async":
        return AsyncSchedule(cfg.algorithm.max_staleness, cfg.cluster.wait_timeout_s,
                             checkpoints=cfg.runner.save_interval > 0)
    raise InputError(f"schedule '{name}' is not available yet (available: sync, async)", key="runner.schedule")
