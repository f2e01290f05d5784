"""Runtime: Ray cluster, devices, workers and worker groups. Knows nothing about RL.

The names load on first use (PEP 562), so that `rlinf.scheduler.cluster` (Ray, no torch) can start Ray
while another thread still imports torch for the workers' side (see `rlinf.run.run_training`)."""

import importlib
from typing import Any

_WHERE = {
    "Cluster": "rlinf.scheduler.cluster", "Device": "rlinf.scheduler.cluster", "NodeLostError": "rlinf.scheduler.cluster",
    "Worker": "rlinf.scheduler.worker",
    "GroupHandle": "rlinf.scheduler.worker_group", "WorkerDiedError": "rlinf.scheduler.worker_group",
    "WorkerError": "rlinf.scheduler.worker_group", "WorkerGroup": "rlinf.scheduler.worker_group",
    "WorkerTimeoutError": "rlinf.scheduler.worker_group", "wait_first": "rlinf.scheduler.worker_group",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rlinf.scheduler' has no attribute '{name}'")
    return getattr(importlib.import_module(_WHERE[name]), name)
