"""How rollout ranks receive weights: through Ray's object store ({name: numpy array}; bf16 stays a
tensor) or as a target of the resharding engine (`ModuleReshardTarget`)."""

import warnings
from datetime import timedelta
from typing import Dict, Optional

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError

from rlinf.errors import RLinfTimeoutError
from rlinf.scheduler.worker import wait_timeout_s


def fetch_state_dict(ref, timeout_s: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """Tensors viewing the arrays of a published state dict (no copy; load_state_dict copies them).

    Waits at most `timeout_s` (default: the run's `cluster.wait_timeout_s`) for the object."""
    timeout = wait_timeout_s() if timeout_s is None else timeout_s
    try:
        state = ray.get(ref, timeout=timeout)
    except GetTimeoutError:
        raise RLinfTimeoutError(f"published weights not available within {timeout:.0f} s", timeout,
                                "cluster.wait_timeout_s") from None
    with warnings.catch_warnings():
        # Arrays from the object store are read-only views; load_state_dict only reads them.
        warnings.simplefilter("ignore", UserWarning)
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def queued_recv_args(reshard, sender_busy_s: float) -> dict:
    """`ReshardTarget.recv` arguments for a receive issued while the sender may still be busy for up to
    `sender_busy_s` seconds (a transfer queued behind the actor's update, `WeightSync.load_after_update`):
    the wait for the first message gets that much longer than `reshard.timeout_s`."""
    if sender_busy_s <= 0:
        return {}
    return {"header_timeout": reshard.link.timeout + timedelta(seconds=sender_busy_s),
            "header_key": "reshard.timeout_s + cluster.wait_timeout_s"}


class ModuleReshardTarget:
    """Mixin for a rollout worker whose `self.model` (a torch module) reads its weights from the resharding
    engine's receive buffers. The controller owns the phase transitions: it calls `setup_reshard` once,
    then per sync `recv_weights` (direct: the buffers are the live weights) or, staged (async schedule),
    `recv_weights` at publish and `apply_weights` between requests; the engine owns the buffers' contents."""

    def _bind_reshard(self, plan, peer_group: str, colocated: bool, cfg, staged: bool) -> dict:
        from rlinf.reshard import ReshardTarget, bind_module

        self.reshard = ReshardTarget(plan, self, peer_group, colocated, cfg.bucket_mb, cfg.pipeline_depth,
                                     cfg.timeout_s, staged=staged, idle_timeout_s=cfg.idle_timeout_s)
        bind_module(self.model, self.reshard.tensors)
        return self.reshard.handle()

    def recv_weights(self, version: int, sender_busy_s: float = 0.0) -> int:
        """Receive weights `version` (direct sync); `sender_busy_s`: see `queued_recv_args`."""
        self.version = self.reshard.recv(version, **queued_recv_args(self.reshard, sender_busy_s))
        return self.version

    def apply_weights(self, version: int) -> int:
        self.version = self.reshard.apply(version)
        return self.version
