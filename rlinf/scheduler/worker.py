"""Worker: the base class of every rank in a WorkerGroup.

A subclass is an ordinary Python class; `WorkerGroup` turns it into N Ray actors. Before the
subclass's `__init__` runs, the group has set the rank's identity in its environment
(RLINF_GROUP, RLINF_RANK, RLINF_WORLD_SIZE, RLINF_DEVICE) and the thread caps, so `Worker.__init__`
can pin torch threads and pick the device. The group then calls `_rlinf_init_dist` on all ranks to
create the group's own torch.distributed process group (gloo on CPU, NCCL on GPU).

Every group call goes through `_rlinf_execute`, which times the method and records a timeline
event; cross-group tensor transfer goes through `send_tensor` / `recv_tensor` over a process group
joined with `_rlinf_join_link` (see `WorkerGroup.link`).
"""

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any, Dict, List, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool]
_HEADER_LEN = 10  # [dtype code, ndim, *shape (<= 8 dims)]


class Worker:
    """Base class of a rank. Attributes: `group_name`, `rank`, `world_size`, `device`."""

    def __init__(self) -> None:
        self.group_name = os.environ.get("RLINF_GROUP", "local")
        self.rank = int(os.environ.get("RLINF_RANK", "0"))
        self.world_size = int(os.environ.get("RLINF_WORLD_SIZE", "1"))
        self.device_index = int(os.environ.get("RLINF_DEVICE", "0"))
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", 0)  # CUDA_VISIBLE_DEVICES holds exactly this rank's GPU
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self._events: List[dict] = []
        self._links: Dict[str, Tuple[Any, int, int]] = {}

    # ---- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.group_name}[{self.rank}]"

    def _rlinf_ping(self) -> Tuple[str, int, int]:
        return (self.group_name, self.rank, os.getpid())

    # ---- timed execution (every group call comes through here) ----------------------------------
    def _rlinf_execute(self, method: str, args: tuple, kwargs: dict) -> Tuple[Any, float, float]:
        start = time.time()
        result = getattr(self, method)(*args, **kwargs)
        end = time.time()
        self._events.append({"name": method, "start": start, "end": end})
        return result, start, end

    def record_event(self, name: str, start: float, end: float) -> None:
        """Record a sub-phase (e.g. 'generate', 'sync_weights') for the timeline."""
        self._events.append({"name": name, "start": start, "end": end})

    def _rlinf_pop_events(self) -> List[dict]:
        events, self._events = self._events, []
        return events

    # ---- torch.distributed ----------------------------------------------------------------------
    def _rlinf_free_port(self) -> Tuple[str, int]:
        ip = os.environ.get("RLINF_NODE_IP", "127.0.0.1")
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def _rlinf_init_dist(self, addr: str, port: int, backend: str, timeout_s: float) -> None:
        """Create this group's default process group (one per worker process)."""
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{addr}:{port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=timeout_s),
        )

    def _rlinf_join_link(self, link: str, addr: str, port: int, rank: int, size: int, peer_offset: int,
                         my_offset: int, backend: str, timeout_s: float) -> None:
        """Join a process group spanning this group and another (for cross-group transfers).

        Each Ray actor is its own process with its group's default process group, so a group over
        ranks of two groups is built directly from a TCPStore rather than through `new_group`.
        """
        store = dist.TCPStore(addr, port, size, is_master=(rank == 0), timeout=timedelta(seconds=timeout_s))
        if backend == "nccl":
            pg = dist.ProcessGroupNCCL(store, rank, size)
        else:
            pg = dist.ProcessGroupGloo(store, rank, size, timedelta(seconds=timeout_s))
        self._links[link] = (pg, my_offset, peer_offset)

    def _link_for(self, peer_group: str) -> Tuple[Any, int, int]:
        for key, value in self._links.items():
            if peer_group in key.split("<->"):
                return value
        raise RuntimeError(f"{self.name} has no link to group '{peer_group}' (call WorkerGroup.link first)")

    def send_tensor(self, tensor: torch.Tensor, peer_group: str, peer_rank: int, tag: int = 0) -> None:
        """Send `tensor` to rank `peer_rank` of `peer_group` (shape and dtype travel in a header)."""
        pg, _, peer_offset = self._link_for(peer_group)
        if tensor.dim() > _HEADER_LEN - 2:
            raise ValueError(f"send_tensor supports up to {_HEADER_LEN - 2} dims, got {tensor.dim()}")
        header = torch.zeros(_HEADER_LEN, dtype=torch.int64)
        header[0] = _DTYPES.index(tensor.dtype)
        header[1] = tensor.dim()
        header[2:2 + tensor.dim()] = torch.tensor(tensor.shape, dtype=torch.int64)
        dst = peer_offset + peer_rank
        pg.send([header.to(self.device)], dst, tag).wait()
        pg.send([tensor.contiguous().to(self.device)], dst, tag).wait()

    def recv_tensor(self, peer_group: str, peer_rank: int, tag: int = 0) -> torch.Tensor:
        """Receive a tensor sent by `send_tensor` from rank `peer_rank` of `peer_group`."""
        pg, _, peer_offset = self._link_for(peer_group)
        src = peer_offset + peer_rank
        header = torch.zeros(_HEADER_LEN, dtype=torch.int64, device=self.device)
        pg.recv([header], src, tag).wait()
        header = header.cpu()
        ndim = int(header[1])
        out = torch.empty(tuple(header[2:2 + ndim].tolist()), dtype=_DTYPES[int(header[0])], device=self.device)
        pg.recv([out], src, tag).wait()
        return out

    def link_broadcast(self, tensor: torch.Tensor, peer_group: str, src_rank_in_link: int) -> torch.Tensor:
        """Broadcast over the link process group (in place) from link rank `src_rank_in_link`."""
        pg, _, _ = self._link_for(peer_group)
        opts = dist.BroadcastOptions()
        opts.rootRank = src_rank_in_link
        pg.broadcast([tensor], opts).wait()
        return tensor

    def _rlinf_shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
