"""Reshard workers that also report their process id (for the leak and socket tests)."""

import os

from rlinf.reshard import ReshardTarget
from tests.integration.reshard_workers import ReshardSourceWorker, ReshardTargetWorker


class PidSource(ReshardSourceWorker):
    def pid(self) -> int:
        return os.getpid()


class PidTarget(ReshardTargetWorker):
    def pid(self) -> int:
        return os.getpid()

    def make_staged(self, key: str, plan, peer: str, idle_timeout_s: float) -> None:
        self.targets[key] = ReshardTarget(plan, self, peer, colocated=False, bucket_mb=0.01, timeout_s=30.0,
                                          staged=True, idle_timeout_s=idle_timeout_s)
