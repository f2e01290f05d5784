"""Worker classes used by the scheduler tests (importable by Ray workers)."""

import os
import time

import torch
import torch.distributed as dist

from rlinf.scheduler import Worker


class EchoWorker(Worker):
    def __init__(self, base: int = 0):
        super().__init__()
        self.base = base

    def add(self, x):
        return self.base + x + self.rank

    def identity(self):
        return {"group": self.group_name, "rank": self.rank, "world": self.world_size,
                "device": self.device_index, "threads": torch.get_num_threads(),
                "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}

    def fail(self, message):
        raise ValueError(message)

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def all_reduce_rank(self):
        t = torch.tensor([float(self.rank + 1)])
        dist.all_reduce(t)
        return t.item(), dist.get_world_size()

    def send_to(self, peer, n):
        self.send_tensor(torch.arange(n, dtype=torch.float64).reshape(-1, 2) * (self.rank + 1), peer, self.rank)
        self.send_tensor(torch.tensor([True, False]), peer, self.rank, tag=1)
        return n

    def recv_from(self, peer):
        t = self.recv_tensor(peer, self.rank)
        flags = self.recv_tensor(peer, self.rank, tag=1)
        return t, flags

    def bcast(self, peer, value):
        t = torch.full((4,), float(value))
        return self.link_broadcast(t, peer, 0).tolist()


class BrokenInit(Worker):
    def __init__(self):
        super().__init__()
        raise RuntimeError("cannot build model")

    def noop(self):
        return None
