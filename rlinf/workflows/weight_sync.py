"""WeightSync: actor weights -> rollout ranks, split into two phases with distinct owners.

- `publish(version)` is called by the training loop after an update: every actor rank takes part in
  gathering full weights (a collective), rank 0 puts them in Ray's object store, and the refs become
  the newest published version. The actor is idle at that moment, so this never waits on training.
- `load()` is called by whoever drives rollouts, between generation requests: every rollout rank loads
  the newest published weights (bit-exact) and reports the version it now holds.
Under the sync schedule both happen back to back before each rollout; under the async schedule the
producer thread only ever loads, so it never queues behind the next update on the actor ranks.

With the resharding engine (`use_engine`), the transfer is planned (rlinf.reshard):
- direct (sync schedule, the rollout is idle during a sync): publishing only records the version and
  `load` runs the transfer (actor ranks send, rollout ranks receive, both at once) straight into the
  weights the rollout generates from.
- staged (async schedule, the rollout generates while the actor publishes): `publish` runs the
  transfer into each rollout rank's staging arena (the actor is idle; the rollout keeps generating)
  and `load` switches the rollout to it between requests (`apply_weights`: one copy staging -> live),
  so no request ever sees two versions. One lock orders publish and load, so a publish never
  writes a staging arena while a load copies it.
"""

import threading
from typing import List, Optional

from rlinf.scheduler import WorkerGroup


class WeightSync:
    def __init__(self, actor: WorkerGroup, rollout: WorkerGroup, phase):
        self.actor, self.rollout, self.phase = actor, rollout, phase
        self.published_version = -1
        self.synced_version = -1
        self._refs: Optional[List] = None
        self._lock = threading.Lock()
        self.engine: Optional[str] = None  # None (object store), "direct" or "staged"
        self._unsettled: Optional[tuple] = None  # (handles, version) of a direct load not waited for yet

    def use_engine(self, cfg, colocated: bool, staged: bool = False) -> None:
        """Set up the resharding engine between the groups (plans are computed once, here); `staged`
        for rollouts that generate while the actor publishes (async schedule)."""
        from rlinf.reshard import wait_all

        self.actor.link(self.rollout)
        extra = {"staged": True} if staged else {}
        handles = self.rollout.call("setup_reshard", self.actor.name, self.actor.size, colocated, cfg, **extra).wait()
        wait_all([self.actor.call("setup_reshard", self.rollout.name, self.rollout.size, cfg, handles)])
        self.engine = "staged" if staged else "direct"

    def publish(self, version: int) -> None:
        with self._lock:
            self._settle_locked()
            if self.published_version == version:
                return
            if self.engine == "direct":
                self.published_version = version
                return
            with self.phase("publish_weights"):
                if self.engine == "staged":
                    self.actor.call("send_weights", version).wait()
                else:
                    self._refs = [r for per_rank in self.actor.call("export_weights").wait() for r in per_rank]
            self.published_version = version

    def load(self, settle: bool = True) -> None:
        """With `settle=False` and the direct engine, the transfer is only issued: the caller queues its
        next rollout call behind it (a rank runs its calls in the order they were issued, so that call
        runs on the new weights) and then calls `settle()`, which waits for the transfer and checks the
        versions. That saves the controller's round trip between loading and generating."""
        with self._lock:
            self._settle_locked()
            version = self.published_version
            if version < 0 or self.synced_version == version:
                return
            with self.phase("load_weights"):
                if self.engine == "staged":
                    versions = self.rollout.call("apply_weights", version).wait()
                elif self.engine == "direct":
                    handles = [self.actor.call("send_weights", version), self.rollout.call("recv_weights", version)]
                    self._unsettled = (handles, version)
                    if not settle:
                        return
                    self._settle_locked()
                    return
                else:
                    versions = self.rollout.call("load_weights", self._refs, version).wait()
            self._check_versions(versions, version)

    def load_after_update(self, version: int) -> bool:
        """Direct engine only (else nothing happens; returns False): publish `version` and issue its transfer
        now, while the actor ranks still run the update that makes it. Each rank runs its calls in the
        order they were issued, so the send starts as soon as the update ends, without a controller round
        trip; `settle()` (or the next load) waits for it. The caller guarantees that the next thing the
        rollout ranks need is these weights (the sync schedule without residency changes)."""
        with self._lock:
            if self.engine != "direct":
                return False
            self._settle_locked()
            self.published_version = version
            with self.phase("load_weights"):
                # the receivers wait for the first message as long as the update may take, on top
                handles = [self.actor.call("send_weights", version),
                           self.rollout.call("recv_weights", version, sender_busy_s=self.actor.timeout)]
            self._unsettled = (handles, version)
            return True

    def settle(self) -> None:
        """Wait for a load issued with `settle=False` (nothing to do otherwise)."""
        with self._lock:
            self._settle_locked()

    def _settle_locked(self) -> None:
        if self._unsettled is None:
            return
        from rlinf.reshard import wait_all

        (handles, version), self._unsettled = self._unsettled, None
        _, versions = wait_all(handles)
        self._check_versions(versions, version)

    def _check_versions(self, versions: List[int], version: int) -> None:
        if set(versions) != {version}:
            raise RuntimeError(f"rollout ranks report versions {versions}, expected {version}")
        self.synced_version = version

    def reset(self) -> None:
        """Forget what was published and loaded (after a checkpoint load replaced the actor's weights)."""
        with self._lock:
            self._settle_locked()
            self.published_version = self.synced_version = -1
            self._refs = None


class WeightSyncMixin:
    """The workflow side of weight sync: `self.weights` (a WeightSync) and `self.version` (updates done)."""

    weights: WeightSync
    version: int

    def sync_weights(self, publish: bool = True) -> None:
        """Make the rollout ranks hold the newest weights (publishing the actor's current ones first)."""
        if publish:
            self.weights.publish(self.version)
        self.weights.load(settle=self.settle_weight_loads)

    # Set by the sync schedule when nothing moves between an update and the next weight sync (no residency
    # changes): train() then issues the transfer of the new weights behind the update (load_after_update).
    load_weights_after_update = False

    # A workflow whose next rollout call settles the load itself (`WeightSync.load(settle=False)`) sets this
    # False; every rollout call it issues after `sync_weights` must be followed by `self.weights.settle()`.
    settle_weight_loads = True

    def publish_weights(self) -> None:
        self.weights.publish(self.version)

    @property
    def synced_version(self) -> int:
        self.weights.settle()
        return self.weights.synced_version
