"""Worker: the base class of every rank in a WorkerGroup.

A subclass is an ordinary Python class; `WorkerGroup` turns it into N Ray actors of `rank_class(subclass)`,
whose constructor puts the rank's identity (RLINF_GROUP, RLINF_RANK, RLINF_WORLD_SIZE, RLINF_DEVICE) in
the process's environment before the subclass's `__init__` runs; the thread caps and the run's settings
are in the environment the process started with (see `Cluster.actor_options`). So `Worker.__init__`
can pin torch threads and pick the device. The group then calls `_rlinf_init_dist` on all ranks to
create the group's own torch.distributed process group (gloo on CPU, NCCL on GPU).

Every group call goes through `_rlinf_execute`, which times the method and records a timeline
event; cross-group tensor transfer goes through `send_tensor` / `recv_tensor` over a process group
joined with `_rlinf_join_link` (see `WorkerGroup.link`).

Sockets: a process group's store is bound before its address is handed out (`_rlinf_free_port` on
the first rank creates the TCPStore server on a socket it bound itself, port 0, and returns the port
the kernel chose; no find-a-free-port-then-hope race). It listens on `RLINF_BIND_HOST`, which the
Cluster sets to 127.0.0.1 on a single-node cluster (the node's IP only when the cluster spans nodes),
and gloo's pair sockets bind the same address. Every wait on a transfer is bounded
(`cluster.wait_timeout_s`, in the environment as RLINF_WAIT_TIMEOUT_S, unless a call gives its own).
"""

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def wait_timeout_s() -> float:
    """The run's bound on a single wait (`cluster.wait_timeout_s`, set in every worker's environment)."""
    return float(os.environ.get("RLINF_WAIT_TIMEOUT_S", "600"))


def bind_host() -> str:
    """The address this worker's listening sockets bind to (loopback unless the cluster spans nodes)."""
    return os.environ.get("RLINF_BIND_HOST", LOOPBACK)


def _loopback_interface() -> str:
    try:
        import psutil

        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address == LOOPBACK for a in addrs):
                return name
    except ImportError:
        pass
    return "lo"


def bound_store(host: str, timeout: timedelta) -> Any:
    """A TCPStore server on a socket bound to `host`, port chosen by the kernel (`store.port`); torch's
    own port-0 store would listen on every interface."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(128)
        store = dist.TCPStore(host, sock.getsockname()[1], None, is_master=True, timeout=timeout,
                              wait_for_workers=False, master_listen_fd=sock.fileno())
    except BaseException:
        sock.close()
        raise
    sock.detach()  # the store serves the descriptor from now on; Python must not close it
    return store


def gloo_options(host: str, timeout: timedelta):
    """ProcessGroupGloo options whose pair sockets listen on `host`."""
    opts = dist.ProcessGroupGloo._Options()
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
    opts._timeout = timeout
    return opts

# The rank's identity, set in its environment by `rank_class` before the worker's own __init__.
IDENTITY_KEYS = ("RLINF_GROUP", "RLINF_RANK", "RLINF_WORLD_SIZE", "RLINF_DEVICE", "RLINF_NODE_IP")
_RANK_CLASSES: Dict[type, type] = {}


def rank_class(worker_cls: type) -> type:
    """`worker_cls` with a constructor `(identity, *args, **kwargs)` that first puts `identity` (a dict of
    IDENTITY_KEYS) in the process's environment, where `Worker.__init__`, the run's file names and any
    process the rank starts read it.

    The identity travels as an argument, not as a Ray runtime environment, so that a rank can take one
    of the worker processes Ray starts ahead of time (a process for a runtime environment of its own is
    always started anew: ~1-2 s of Python and Ray start-up each, on the path to the first step)."""
    if worker_cls not in _RANK_CLASSES:
        def __init__(self, identity: Dict[str, str], *args: Any, **kwargs: Any) -> None:
            unknown = set(identity) - set(IDENTITY_KEYS)
            if unknown:
                raise ValueError(f"unknown identity keys {sorted(unknown)}")
            start = time.time()
            os.environ.update(identity)
            worker_cls.__init__(self, *args, **kwargs)
            # start-up on the timeline: the process (Python, Ray, the class's imports), then the constructor
            self._events += [{"name": "process_start", "start": _process_start_time(), "end": start},
                             {"name": "__init__", "start": start, "end": time.time()}]

        _RANK_CLASSES[worker_cls] = type(worker_cls.__name__, (worker_cls,), {
            "__init__": __init__, "__qualname__": worker_cls.__qualname__, "__module__": worker_cls.__module__})
    return _RANK_CLASSES[worker_cls]


class PeerResult:
    """Another rank's result of a timed group call, handed over by reference (`GroupHandle.peer_results`):
    the rank that receives it as an argument fetches it itself from Ray's object store, so the data
    never passes through the controller and the call can be issued before the result exists."""

    def __init__(self, ref: Any, source: str):
        self.ref, self.source = ref, source  # source: "group.method[rank]", for errors

    def fetch(self, timeout_s: float) -> Any:
        import ray

        try:
            return ray.get(self.ref, timeout=timeout_s)[0]  # (result, start, end) of `_rlinf_execute`
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"{self.source} gave no result within {timeout_s:.0f}s") from None


def _process_start_time() -> float:
    import psutil  # a dependency of Ray

    return psutil.Process().create_time()


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
        self._link_wires: Dict[str, torch.device] = {}  # where a link's tensors travel from (see link_wire)
        self._link_timeouts: Dict[str, timedelta] = {}
        self._bound: Dict[int, Any] = {}  # port -> store server bound for a group or link, not yet used
        self._stores: List[Any] = []  # kept alive with their process groups
        self.wait_timeout_s = wait_timeout_s()

    # ---- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.group_name}[{self.rank}]"

    def _rlinf_ping(self) -> Tuple[str, int, int]:
        return (self.group_name, self.rank, os.getpid())

    # ---- timed execution (every group call comes through here) ----------------------------------
    def _rlinf_execute(self, method: str, args: tuple, kwargs: dict) -> Tuple[Any, float, float]:
        # Results of other ranks passed by reference arrive first; the timed span starts once they have.
        args = tuple(a.fetch(self.wait_timeout_s) if isinstance(a, PeerResult) else a for a in args)
        start = time.time()
        result = getattr(self, method)(*args, **kwargs)
        end = time.time()
        self._events.append({"name": method, "start": start, "end": end})
        return result, start, end

    # ---- direct calls to a rank of another group (no controller round trip) -------------------------
    def paired_peer(self, peer_actors: List[Any]) -> Any:
        """The rank of another group this rank talks to directly: rank `self.rank mod len(peer_actors)`."""
        return peer_actors[self.rank % len(peer_actors)]

    def call_peer(self, peer_actor: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on another group's rank (its Ray actor, timed like a group call),
        waiting at most `wait_timeout_s`."""
        import ray

        result, _, _ = ray.get(peer_actor._rlinf_execute.remote(method, args, kwargs), timeout=self.wait_timeout_s)
        return result

    def record_event(self, name: str, start: float, end: float) -> None:
        """Record a sub-phase (e.g. 'generate', 'sync_weights') for the timeline."""
        self._events.append({"name": name, "start": start, "end": end})

    def _rlinf_pop_events(self) -> List[dict]:
        events, self._events = self._events, []
        return events

    # ---- torch.distributed ----------------------------------------------------------------------
    def _rlinf_free_port(self, host: Optional[str] = None) -> Tuple[str, int]:
        """Bind a store server now (on `host`, default `bind_host()`) and return its address; the
        `_rlinf_init_dist` / `_rlinf_join_link` call of this process that names the port serves it."""
        host = host or bind_host()
        store = bound_store(host, timedelta(seconds=self.wait_timeout_s))
        self._bound[store.port] = store
        return host, store.port

    def _store(self, addr: str, port: int, size: int, timeout: timedelta) -> Any:
        """The store server bound by `_rlinf_free_port` in this process, else a client of it."""
        store = self._bound.pop(port, None)
        if store is None:
            store = dist.TCPStore(addr, port, size, is_master=False, timeout=timeout)
        self._stores.append(store)
        return store

    def _use_bind_host(self, addr: str) -> None:
        """gloo / NCCL pick the interface their own sockets listen on from the environment."""
        if addr == LOOPBACK:
            iface = _loopback_interface()
            os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
            os.environ.setdefault("NCCL_SOCKET_IFNAME", iface)

    def _rlinf_init_dist(self, addr: str, port: int, backend: str, timeout_s: float) -> None:
        """Create this group's default process group (one per worker process)."""
        timeout = timedelta(seconds=timeout_s)
        self._use_bind_host(addr)
        dist.init_process_group(backend=backend, store=self._store(addr, port, self.world_size, timeout),
                                rank=self.rank, world_size=self.world_size, timeout=timeout)

    def _rlinf_join_link(self, link: str, addr: str, port: int, rank: int, size: int, peer_offset: int,
                         my_offset: int, backend: str, timeout_s: float) -> None:
        """Join a process group spanning this group and another (for cross-group transfers).

        Each Ray actor is its own process with its group's default process group, so a group over
        ranks of two groups is built directly from a TCPStore rather than through `new_group`.
        """
        timeout = timedelta(seconds=timeout_s)
        self._use_bind_host(addr)
        store = self._store(addr, port, size, timeout)
        if backend == "nccl":
            pg = dist.ProcessGroupNCCL(store, rank, size)
        else:
            pg = dist.ProcessGroupGloo(store, rank, size, gloo_options(addr, timeout))
        self._links[link] = (pg, my_offset, peer_offset)
        self._link_wires[link] = self.device if backend == "nccl" else torch.device("cpu")
        self._link_timeouts[link] = timeout

    def _link_for(self, peer_group: str) -> Tuple[Any, int, int]:
        for key, value in self._links.items():
            if peer_group in key.split("<->"):
                return value
        raise RuntimeError(f"{self.name} has no link to group '{peer_group}' (call WorkerGroup.link first)")

    def link_wire(self, peer_group: str) -> torch.device:
        """The device a tensor must be on to travel over the link with `peer_group`: this rank's GPU on an
        NCCL link, the CPU on a gloo link (also on GPU ranks whose link is gloo because the two groups
        share a GPU, see `WorkerGroup.link`); `send_tensor` / `recv_tensor` stage through it."""
        for key, value in self._link_wires.items():
            if peer_group in key.split("<->"):
                return value
        raise RuntimeError(f"{self.name} has no link to group '{peer_group}' (call WorkerGroup.link first)")

    def _link_timeout(self, peer_group: str, timeout_s: Optional[float]) -> timedelta:
        if timeout_s is not None:
            return timedelta(seconds=timeout_s)
        for key, value in self._link_timeouts.items():
            if peer_group in key.split("<->"):
                return value
        return timedelta(seconds=self.wait_timeout_s)

    def _wait_work(self, work, timeout: timedelta, what: str) -> None:
        try:
            work.wait(timeout)
        except RuntimeError as e:
            if "timed out" in str(e).lower() or "timeout" in str(e).lower():
                from rlinf.errors import RLinfTimeoutError

                raise RLinfTimeoutError(f"{self.name}: {what} did not complete within {timeout.total_seconds():.0f} s "
                                        f"({e})", timeout.total_seconds(), "cluster.wait_timeout_s") from e
            raise

    def send_tensor(self, tensor: torch.Tensor, peer_group: str, peer_rank: int, tag: int = 0,
                    timeout_s: Optional[float] = None) -> None:
        """Send `tensor` to rank `peer_rank` of `peer_group` (shape and dtype travel in a header).
        Each message waits at most `timeout_s` (default: the link's timeout)."""
        pg, _, peer_offset = self._link_for(peer_group)
        timeout = self._link_timeout(peer_group, timeout_s)
        if tensor.dim() > _HEADER_LEN - 2:
            raise ValueError(f"send_tensor supports up to {_HEADER_LEN - 2} dims, got {tensor.dim()}")
        header = torch.zeros(_HEADER_LEN, dtype=torch.int64)
        header[0] = _DTYPES.index(tensor.dtype)
        header[1] = tensor.dim()
        header[2:2 + tensor.dim()] = torch.tensor(tensor.shape, dtype=torch.int64)
        dst = peer_offset + peer_rank
        what = f"send to {peer_group}[{peer_rank}]"
        wire = self.link_wire(peer_group)
        self._wait_work(pg.send([header.to(wire)], dst, tag), timeout, what)
        self._wait_work(pg.send([tensor.contiguous().to(wire)], dst, tag), timeout, what)

    def recv_tensor(self, peer_group: str, peer_rank: int, tag: int = 0, timeout_s: Optional[float] = None) -> torch.Tensor:
        """Receive a tensor sent by `send_tensor` from rank `peer_rank` of `peer_group` (each message
        waits at most `timeout_s`, default the link's timeout)."""
        pg, _, peer_offset = self._link_for(peer_group)
        timeout = self._link_timeout(peer_group, timeout_s)
        what = f"receive from {peer_group}[{peer_rank}]"
        src = peer_offset + peer_rank
        wire = self.link_wire(peer_group)
        header = torch.zeros(_HEADER_LEN, dtype=torch.int64, device=wire)
        self._wait_work(pg.recv([header], src, tag), timeout, what)
        header = header.cpu()
        ndim = int(header[1])
        out = torch.empty(tuple(header[2:2 + ndim].tolist()), dtype=_DTYPES[int(header[0])], device=wire)
        self._wait_work(pg.recv([out], src, tag), timeout, what)
        return out.to(self.device)

    def link_broadcast(self, tensor: torch.Tensor, peer_group: str, src_rank_in_link: int,
                       timeout_s: Optional[float] = None) -> torch.Tensor:
        """Broadcast over the link process group (in place) from link rank `src_rank_in_link`."""
        pg, _, _ = self._link_for(peer_group)
        opts = dist.BroadcastOptions()
        opts.rootRank = src_rank_in_link
        on_wire = tensor.to(self.link_wire(peer_group))
        self._wait_work(pg.broadcast([on_wire], opts), self._link_timeout(peer_group, timeout_s),
                        f"broadcast over the link with {peer_group}")
        if on_wire is not tensor:  # staged through the wire device: back into the caller's tensor
            tensor.copy_(on_wire)
        return tensor

    def _rlinf_shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        self._links.clear()
        self._link_wires.clear()
