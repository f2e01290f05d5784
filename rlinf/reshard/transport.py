"""Transports that execute a `ReshardPlan` between the ranks of a source and a target WorkerGroup.

Both groups must be joined with `WorkerGroup.link` (one process group over all their ranks). The
source side runs on every actor rank (`ReshardSource.send`), the target side on every rollout rank
(`ReshardTarget.recv`); the controller starts both group calls at once (see `rlinf.reshard.control`).

Target storage: each target rank owns one contiguous byte arena (`plan.arena_layout`) and
`ReshardTarget.tensors` are typed views into it, so a rollout model whose parameters are bound to
those views is updated in place. Per (source, target) pair the transfer is one of:

* direct (colocated): the target's arena is reachable from the source process, so the source copies
  its slices straight into it (one copy, nothing staged). On CPU the arena is a /dev/shm file mapped
  `MAP_SHARED` by both processes (`torch.from_file(..., shared=True)`), named with the run's prefix
  (`rlinf.utils.runfiles`): the controller removes it when the run ends or fails, even when the rank
  that made it was killed (a destructor would not run then); on GPU it is a CUDA tensor
  whose IPC handle is opened by a source on the same physical GPU (same device UUID). The CUDA
  branch is written but untested here (no GPU in CI). After its writes the source sends a small
  header; the target's `recv` returns when every source's header has arrived.
* bucketed (disaggregated, or a pair on different devices): after the header, the pair's transfers
  are packed in plan order into buckets of `bucket_mb` (`plan.buckets`) and sent with point-to-point
  `isend`/`irecv` over the link (gloo on CPU, NCCL on GPU). A bucket holding one piece that is
  contiguous on a side skips the staging copy on that side (sent from / received into the tensor
  itself). Each rank keeps `depth` buckets per peer in flight, so bucket i+1 travels while bucket i
  is unpacked.

Staged targets (`staged=True`, for rollouts that keep generating while the actor publishes, i.e.
the async schedule): a request must never see weights change under it, yet the publish happens
while the rollout is busy. So the delivery and the switch are split. The arena described above
becomes a *staging* arena that the sources write (directly, colocated) or that a receiver thread of
the target process fills (bucketed) at publish time, concurrently with generation; the model is
bound to a second, private *live* arena that only `apply()` writes: it runs as an ordinary call of
the rollout worker, so between two requests (Ray runs a worker's calls one at a time, in order), and
copies staging -> live. Chosen over double buffering with a pointer swap because a swap lets the
source overwrite the buffer the rollout still generates from whenever the actor publishes twice
before the rollout switches (staleness >= 2); the copy costs one memcpy of the replica's bytes in
the rollout, between requests. Publish and apply of one target must not overlap (the source would
write the staging arena during the copy): `rlinf.workflows.weight_sync.WeightSync` serialises them
with one lock, and `apply(version)` first waits until the receiver has the whole of `version`.
The receiver thread serves its link until the process ends (a pending gloo receive cannot be
cancelled), so a link carries at most one staged target per target rank. Its wait for the next
sync's header is bounded by `idle_timeout_s` (config `reshard.idle_timeout_s`): past it the receiver
stops and the next `apply` raises `ReshardTimeoutError`, which the controller's restart path handles.

Deadlock freedom: every rank posts its operations in one global order, (round k, source, target),
and waits on them oldest first. The globally earliest unfinished operation has then been posted by
both its sender and its receiver, so it completes; by induction all do (gloo and NCCL point-to-point
need both sides posted). Every wait has `timeout_s`, so a dead peer turns into an error
(`ReshardTimeoutError`), not a hang.
"""

import logging
import math
import os
import socket
import threading
from collections import deque
from datetime import timedelta
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from rlinf.errors import ReshardTimeoutError
from rlinf.reshard.plan import ReshardPlan, Transfer, align
from rlinf.scheduler import Worker
from rlinf.utils.runfiles import shm_path

logger = logging.getLogger(__name__)

_HEADER = 3  # int64 [version, plan fingerprint, direct flag]


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor (no copy)."""
    return t.reshape(-1).view(torch.uint8)


def _views(arena: torch.Tensor, plan: ReshardPlan, dst: int) -> Dict[str, torch.Tensor]:
    out = {}
    for name, (offset, shape) in plan.arena_layout(dst).items():
        p = plan.params[name]
        n = math.prod(shape) * p.itemsize
        out[name] = arena[offset:offset + n].view(p.dtype).view(shape)
    return out


def _wire_layout(bucket: List[Transfer]) -> Tuple[List[int], int]:
    """Byte offsets of a bucket's pieces in its packed buffer, and the bytes on the wire."""
    offsets, size = [], 0
    for piece in bucket:
        offsets.append(align(size))
        size = offsets[-1] + piece.nbytes
    return offsets, size


class _Ring:
    """`slots` reusable staging buffers (grown on demand) for packed buckets."""

    def __init__(self, slots: int, device: torch.device):
        self.buffers: List[Optional[torch.Tensor]] = [None] * slots
        self.device = device
        self.next = 0

    def take(self, nbytes: int) -> torch.Tensor:
        i = self.next
        self.next = (i + 1) % len(self.buffers)
        if self.buffers[i] is None or self.buffers[i].numel() < nbytes:
            self.buffers[i] = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        return self.buffers[i][:nbytes]


class _Window:
    """Operations in flight, finished oldest first, bounded by bytes (`depth` buckets per peer) and by
    the staging buffers (a packed bucket's ring slot is reused only once its operation finished)."""

    def __init__(self, max_bytes: int, slots: int, finish: Callable):
        self.max_bytes, self.slots, self.finish = max_bytes, slots, finish
        self.ops: deque = deque()
        self.bytes = self.staged = 0

    def admit(self, nbytes: int, staged: bool) -> None:
        while self.ops and (self.bytes + nbytes > self.max_bytes or (staged and self.staged >= self.slots)):
            self.pop()

    def push(self, op, nbytes: int, staged: bool) -> None:
        self.ops.append((op, nbytes, staged))
        self.bytes += nbytes
        self.staged += staged

    def pop(self) -> None:
        op, nbytes, staged = self.ops.popleft()
        self.bytes -= nbytes
        self.staged -= staged
        self.finish(op)

    def drain(self) -> None:
        while self.ops:
            self.pop()


class _StagedRecv:
    """A receive into host memory whose `wait` copies the bytes on to the tensor's own device."""

    def __init__(self, work, host: torch.Tensor, dest: torch.Tensor):
        self.work, self.host, self.dest = work, host, dest

    def wait(self, timeout: timedelta) -> bool:
        done = self.work.wait(timeout)
        self.dest.copy_(self.host)
        return done


class _Link:
    """The source or target rank's view of the link process group. `device` is the rank's own device;
    tensors that are not on the link's wire device (`Worker.link_wire`: the CPU for a gloo link between
    groups that share a GPU) are staged through it."""

    def __init__(self, worker: Worker, peer_group: str, timeout_s: float):
        self.pg, self.my_offset, self.peer_offset = worker._link_for(peer_group)
        self.device = worker.device
        self.wire = worker.link_wire(peer_group)
        self.timeout = timedelta(seconds=timeout_s)
        self.peer_group = peer_group

    def isend(self, t: torch.Tensor, peer: int, tag: int):
        # a staged copy lives as long as the send: gloo's send work holds its tensor until it completes
        return self.pg.send([t if t.device == self.wire else t.to(self.wire)], self.peer_offset + peer, tag)

    def irecv(self, t: torch.Tensor, peer: int, tag: int):
        if t.device == self.wire:
            return self.pg.recv([t], self.peer_offset + peer, tag)
        host = torch.empty_like(t, device=self.wire)
        return _StagedRecv(self.pg.recv([host], self.peer_offset + peer, tag), host, t)

    def wait(self, work, what: str, timeout: Optional[timedelta] = None, key: str = "reshard.timeout_s") -> None:
        timeout = timeout or self.timeout
        try:
            work.wait(timeout)
        except RuntimeError as e:
            if _is_timeout(e):
                raise ReshardTimeoutError(f"reshard {what} with {self.peer_group}: nothing within "
                                          f"{timeout.total_seconds():.0f} s ({e})", timeout.total_seconds(), key) from e
            raise RuntimeError(f"reshard {what} with {self.peer_group} failed: {e}") from e


def _is_timeout(e: BaseException) -> bool:
    text = str(e).lower()
    return "timed out" in text or "timeout" in text


def _schedule(plan: ReshardPlan, bucket_bytes: int, pairs: List[Tuple[int, int]]):
    """(round, src, dst, bucket) for the given bucketed pairs, in the one global order."""
    per_pair = {pair: plan.buckets(pair[0], pair[1], bucket_bytes) for pair in pairs}
    ops = [(k, s, d, b) for (s, d), buckets in per_pair.items() for k, b in enumerate(buckets)]
    return sorted(ops, key=lambda op: op[:3])


class ReshardSource:
    """Source side, one per actor rank: `send(local_shards)` every sync. `rank` is the dp rank."""

    def __init__(self, plan: ReshardPlan, worker: Worker, peer_group: str, bucket_mb: float = 64.0,
                 depth: int = 2, timeout_s: float = 300.0, rank: Optional[int] = None):
        self.plan, self.rank = plan, worker.rank if rank is None else rank
        self.link = _Link(worker, peer_group, timeout_s)
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.targets = plan.targets_of(self.rank)
        self.window = max(1, depth) * max(1, len(self.targets))
        self.ring = _Ring(self.window, worker.device)
        self.direct: Dict[int, list] = {}
        self.version = -1  # nothing sent yet; rlinf counts the initial weights as version 0
        self.fingerprint = plan.fingerprint()
        self._schedules: Dict[frozenset, list] = {}

    def attach(self, handles: List[Optional[dict]]) -> List[int]:
        """Map the target arenas reachable from this process (handles from `ReshardTarget.handle()`,
        indexed by target rank); returns the target ranks this source will write directly."""
        self.direct = {}
        for dst in self.targets:
            arena = _open_arena(handles[dst]) if dst < len(handles) else None
            if arena is not None:
                views = _views(arena, self.plan, dst)
                # (destination view, parameter, source index), computed once: a sync is then one
                # copy_ per transfer with no slicing of the arena
                self.direct[dst] = [(views[t.name][t.dst_index()], t.name, t.src_index())
                                    for t in self.plan.pair(self.rank, dst)]
        return sorted(self.direct)

    def _local(self, tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for name in self.plan.params:
            want = self.plan.src_shape(name, self.rank)
            if want is None:
                continue
            if name not in tensors:
                raise KeyError(f"reshard source rank {self.rank}: parameter '{name}' missing")
            t = tensors[name]
            t = t.to_local() if hasattr(t, "to_local") else t
            if tuple(t.shape) != want:
                raise ValueError(f"reshard source rank {self.rank}: '{name}' has local shape {tuple(t.shape)}, "
                                 f"the plan expects {want} (FSDP2 Shard(0) over {self.plan.source.dp_size} ranks)")
            out[name] = t.detach()
        return out

    @torch.no_grad()
    def send(self, tensors: Mapping[str, torch.Tensor], version: Optional[int] = None) -> int:
        """Move this rank's shards (`{name: local tensor or DTensor}`) to every target; returns the version.

        `version` defaults to the previous one + 1 and must increase."""
        version = self.version + 1 if version is None else int(version)
        if version <= self.version:
            raise ValueError(f"weight version must increase: {version} after {self.version}")
        local = self._local(tensors)
        link = self.link
        for copies in self.direct.values():
            for region, name, index in copies:
                region.copy_(local[name][index])
        if self.direct and link.device.type == "cuda":
            torch.cuda.synchronize(link.device)
        headers = []
        for dst in self.targets:
            header = torch.tensor([version, self.fingerprint, int(dst in self.direct)], dtype=torch.int64,
                                  device=link.device)
            headers.append((link.isend(header, dst, 0), header))  # keep the tensor alive until sent
        for work, _ in headers:
            link.wait(work, f"header from source rank {self.rank}")
        bucketed = [(self.rank, d) for d in self.targets if d not in self.direct]
        key = frozenset(bucketed)
        if key not in self._schedules:
            self._schedules[key] = _schedule(self.plan, self.bucket_bytes, bucketed)
        what = f"send from source rank {self.rank}"
        window = _Window(self.window * self.bucket_bytes, self.window, lambda op: link.wait(op[0], what))
        for k, _, dst, bucket in self._schedules[key]:
            view = self._zero_copy(bucket, local)
            nbytes = _wire_layout(bucket)[1]
            window.admit(nbytes, view is None)
            buf = view if view is not None else self._pack(bucket, local)
            window.push((link.isend(buf, dst, k + 1), buf), nbytes, view is None)
        window.drain()
        self.version = version
        return version

    @staticmethod
    def _zero_copy(bucket: List[Transfer], local: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """The bytes to send straight from the shard (a lone contiguous piece), else None."""
        if len(bucket) == 1:
            piece = local[bucket[0].name][bucket[0].src_index()]
            if piece.is_contiguous():
                return _bytes(piece)
        return None

    def _pack(self, bucket: List[Transfer], local: Dict[str, torch.Tensor]) -> torch.Tensor:
        offsets, size = _wire_layout(bucket)
        buf = self.ring.take(size)
        for off, tr in zip(offsets, bucket):
            dst = buf[off:off + tr.nbytes].view(self.plan.params[tr.name].dtype).view(tr.shape)
            dst.copy_(local[tr.name][tr.src_index()])
        return buf


class ReshardTarget:
    """Target side, one per rollout rank: owns the weight arena; `recv()` every sync. `rank` is
    `replica * tp_size + tp_rank` (default: the worker's rank)."""

    def __init__(self, plan: ReshardPlan, worker: Worker, peer_group: str, colocated: bool = False,
                 bucket_mb: float = 64.0, depth: int = 2, timeout_s: float = 300.0, rank: Optional[int] = None,
                 staged: bool = False, idle_timeout_s: float = 3600.0):
        self._path: Optional[str] = None
        self.idle_timeout = timedelta(seconds=idle_timeout_s)
        self.plan, self.rank = plan, worker.rank if rank is None else rank
        self.link = _Link(worker, peer_group, timeout_s)
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))
        self.sources = plan.sources_of(self.rank)
        self.window = max(1, depth) * max(1, len(self.sources))
        self.ring = _Ring(self.window, worker.device)
        self.version = -1
        self.fingerprint = plan.fingerprint()
        nbytes = max(1, plan.arena_bytes(self.rank))
        self._handle: Optional[dict] = None
        if colocated and worker.device.type == "cpu":
            # named with the run's prefix: the controller removes it however this process ends
            self._path = shm_path("reshard", worker.group_name, worker.rank)
            with open(self._path, "wb") as f:
                f.truncate(nbytes)
            self.arena = torch.from_file(self._path, shared=True, size=nbytes, dtype=torch.uint8)
            self._handle = {"kind": "shm", "path": self._path, "host": socket.gethostname(), "nbytes": nbytes}
        else:
            self.arena = torch.zeros(nbytes, dtype=torch.uint8, device=worker.device)
            if colocated and torch.cuda.is_available():  # untested here: no GPU on the CI machine
                from torch.multiprocessing.reductions import reduce_tensor

                self._handle = {"kind": "cuda_ipc", "uuid": str(torch.cuda.get_device_properties(worker.device).uuid),
                                "ipc": reduce_tensor(self.arena), "nbytes": nbytes}
        # What recv() writes; the model's weights (`tensors`) are the same views unless staged.
        self._incoming: Dict[str, torch.Tensor] = _views(self.arena, plan, self.rank)
        self.tensors: Dict[str, torch.Tensor] = self._incoming
        self._schedules: Dict[frozenset, list] = {}
        self.staged = staged
        if staged:
            self.live = torch.zeros(nbytes, dtype=torch.uint8, device=worker.device)
            self.tensors = _views(self.live, plan, self.rank)
            self.staged_version = -1
            self._receiving: Optional[int] = None  # version whose buckets are arriving
            self._error: Optional[BaseException] = None
            self._arrived = threading.Condition()
            self._receiver = threading.Thread(target=self._receive_loop, name=f"reshard-recv-{self.rank}", daemon=True)
            self._receiver.start()

    def _receive_loop(self) -> None:
        """Staged mode: receive every sync into the staging arena as it comes. The wait for a sync's
        header is bounded by `idle_timeout_s` (the longest gap between two publishes); once a header
        arrives the per-message `timeout_s` applies. A timeout ends the loop (the pending gloo receive
        cannot be reposted safely) and the next `apply()` raises it."""
        try:
            while not self._closed():
                version = self.recv(header_timeout=self.idle_timeout, on_header=self._begin,
                                    header_key="reshard.idle_timeout_s")
                with self._arrived:
                    self.staged_version, self._receiving = version, None
                    self._arrived.notify_all()
        except BaseException as e:  # reported by the next apply()
            with self._arrived:
                self._error = e
                self._arrived.notify_all()

    def _begin(self, version: int) -> None:
        """Before any bucket is written: mark the staging arena busy (waits for a running apply)."""
        with self._arrived:
            self._receiving = version

    def _closed(self) -> bool:
        return getattr(self, "_is_closed", False)

    @torch.no_grad()
    def apply(self, version: int, timeout_s: Optional[float] = None) -> int:
        """Staged mode: make the weights the model reads (`tensors`) those of `version`, one copy
        staging -> live. Call between requests; waits for the receiver to have all of `version`."""
        if not self.staged:
            raise RuntimeError("apply() is for staged targets; call recv()")
        timeout = self.link.timeout.total_seconds() if timeout_s is None else timeout_s
        with self._arrived:
            done = lambda: (self.staged_version >= version and self._receiving is None) or self._error is not None
            if not self._arrived.wait_for(done, timeout):
                raise ReshardTimeoutError(f"reshard target rank {self.rank}: version {version} not received in "
                                          f"{timeout} s (have {self.staged_version})", timeout, "reshard.timeout_s")
            if isinstance(self._error, ReshardTimeoutError):
                raise ReshardTimeoutError(f"reshard target rank {self.rank}: receiver stopped: {self._error}",
                                          self._error.timeout_s, self._error.key) from self._error
            if self._error is not None:
                raise RuntimeError(f"reshard target rank {self.rank}: receiver failed: {self._error}") from self._error
            if self.staged_version != version:
                raise RuntimeError(f"reshard target rank {self.rank}: staging holds version {self.staged_version}, "
                                   f"expected {version} (publish and apply overlapped)")
            self.live.copy_(self.arena)
        if self.live.device.type == "cuda":
            torch.cuda.synchronize(self.live.device)
        self.version = version
        return version

    def handle(self) -> Optional[dict]:
        """What a colocated source needs to write into this arena (None: bucketed transfers only)."""
        return self._handle

    @torch.no_grad()
    def recv(self, version: Optional[int] = None,
             on_bucket: Optional[Callable[[int, int], None]] = None, header_timeout: Optional[timedelta] = None,
             on_header: Optional[Callable[[int], None]] = None, header_key: str = "reshard.timeout_s") -> int:
        """Receive one sync from every source that holds part of this rank's slice; returns the version.

        `version` (optional) is checked against what the sources sent; `on_bucket(src, k)` is called
        after bucket k from source `src` has been applied (progress reporting)."""
        link = self.link
        headers = {src: torch.zeros(_HEADER, dtype=torch.int64, device=link.device) for src in self.sources}
        works = [(src, link.irecv(h, src, 0)) for src, h in headers.items()]
        for src, work in works:
            link.wait(work, f"header to target rank {self.rank} from source rank {src}", header_timeout, header_key)
        got = {src: [int(x) for x in h.cpu()] for src, h in headers.items()}
        versions = {v for v, _, _ in got.values()}
        if any(fp != self.fingerprint for _, fp, _ in got.values()):
            raise RuntimeError(f"reshard target rank {self.rank}: sources use a different plan")
        if len(versions) > 1 or (version is not None and versions and versions != {version}):
            raise RuntimeError(f"reshard target rank {self.rank}: versions {sorted(versions)}, expected {version}")
        if on_header is not None:
            on_header(versions.copy().pop() if versions else -1)
        bucketed = [(src, self.rank) for src in self.sources if not got[src][2]]
        key = frozenset(bucketed)
        if key not in self._schedules:
            self._schedules[key] = _schedule(self.plan, self.bucket_bytes, bucketed)
        window = _Window(self.window * self.bucket_bytes, self.window, lambda op: self._finish(op, on_bucket))
        for k, src, _, bucket in self._schedules[key]:
            view = self._zero_copy(bucket)
            nbytes = _wire_layout(bucket)[1]
            window.admit(nbytes, view is None)
            buf = view if view is not None else self.ring.take(nbytes)
            window.push((link.irecv(buf, src, k + 1), buf, bucket, src, k, view is None), nbytes, view is None)
        window.drain()
        if link.device.type == "cuda":
            torch.cuda.synchronize(link.device)
        received = versions.pop() if versions else (version or self.version + 1)
        if not self.staged:  # staged: the model's version changes in apply()
            self.version = received
        return received

    def _zero_copy(self, bucket: List[Transfer]) -> Optional[torch.Tensor]:
        """The weights' own bytes to receive into (a lone piece contiguous in the target), else None."""
        if len(bucket) == 1:
            region = self._incoming[bucket[0].name][bucket[0].dst_index()]
            if region.is_contiguous():
                return _bytes(region)
        return None

    def _finish(self, op, on_bucket) -> None:
        work, buf, bucket, src, k, staged = op
        self.link.wait(work, f"bucket {k} to target rank {self.rank} from source rank {src}")
        if staged:  # unpack while later buckets are still in flight
            offsets, _ = _wire_layout(bucket)
            for off, tr in zip(offsets, bucket):
                piece = buf[off:off + tr.nbytes].view(self.plan.params[tr.name].dtype).view(tr.shape)
                self._incoming[tr.name][tr.dst_index()].copy_(piece)
        if on_bucket is not None:
            on_bucket(src, k)

    def close(self) -> None:
        """Remove the shared-memory file now (mappings stay valid until the processes drop them).

        Optional: the controller removes every file of the run when it ends (`rlinf.utils.runfiles`),
        which also covers a rank killed before it could call this."""
        self._is_closed = True
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        self._path = None


def _open_arena(handle: Optional[dict]) -> Optional[torch.Tensor]:
    """The target arena behind `handle` if this process can write it directly, else None."""
    if handle is None:
        return None
    if handle["kind"] == "shm":
        if handle["host"] != socket.gethostname() or not os.path.exists(handle["path"]):
            return None
        return torch.from_file(handle["path"], shared=True, size=handle["nbytes"], dtype=torch.uint8)
    if handle["kind"] == "cuda_ipc" and torch.cuda.is_available():  # untested here: no GPU
        if str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid) != handle["uuid"]:
            return None
        rebuild, args = handle["ipc"]
        return rebuild(*args)
    return None
