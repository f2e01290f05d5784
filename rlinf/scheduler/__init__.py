"""Runtime: Ray cluster, devices, workers and worker groups. Knows nothing about RL."""

from rlinf.scheduler.cluster import Cluster, Device, NodeLostError
from rlinf.scheduler.worker import Worker
from rlinf.scheduler.worker_group import (
    GroupHandle,
    WorkerDiedError,
    WorkerError,
    WorkerGroup,
    WorkerTimeoutError,
    wait_first,
)

__all__ = ["Cluster", "Device", "GroupHandle", "NodeLostError", "Worker", "WorkerDiedError", "WorkerError", "WorkerGroup",
           "WorkerTimeoutError", "wait_first"]
