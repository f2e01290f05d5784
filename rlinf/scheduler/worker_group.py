"""WorkerGroup: N ranks (Ray actors) of one Worker class, driven SPMD-style from the controller.

    group = WorkerGroup(cluster, RolloutWorker, "rollout", devices=[0, 1], args=(cfg.rollout,))
    handle = group.call("generate", prompts)          # all ranks, same args
    handle = group.scatter("generate", shards)         # rank i gets shards[i]
    handle = group.call("sync", ranks=[0])             # chosen ranks
    results = handle.wait()                            # per-rank results, in rank order
    results = await handle                             # same, from asyncio code
    handle.durations                                   # per-rank seconds of the method

A rank that raises surfaces as one `WorkerError` naming group, rank, method and the remote
traceback; a rank whose process died surfaces as `WorkerDiedError` as soon as Ray notices (seconds);
every wait has a timeout (`cluster.wait_timeout_s` unless given) and raises `WorkerTimeoutError`.
"""

import asyncio
import logging
import re
import time
from typing import Any, List, Optional, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from rlinf.errors import RunFailure
from rlinf.scheduler.cluster import Cluster
from rlinf.scheduler.worker import PeerResult, Worker, rank_class

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError, RunFailure):
    """A rank raised inside a method."""

    def __init__(self, group: str, rank: int, method: str, detail: str):
        self.group, self.rank, self.method = group, rank, method
        super().__init__(f"{group}[rank {rank}].{method} failed:\n{detail}")


class WorkerDiedError(WorkerError):
    """A rank's process died (killed, OOM, crashed) while or before running a method."""

    def __init__(self, group: str, rank: int, method: str, detail: str):
        RuntimeError.__init__(self, f"{group}[rank {rank}] died during {method}: {detail}")
        self.group, self.rank, self.method = group, rank, method


class WorkerTimeoutError(TimeoutError, RunFailure):
    """A wait on a group call ran past its timeout."""

    def __init__(self, group: str, ranks: List[int], method: str, timeout: float):
        self.group, self.ranks, self.method = group, ranks, method
        super().__init__(f"{group} ranks {ranks} did not finish {method} within {timeout:.0f} s")


class WaitTimeoutError(TimeoutError, RunFailure):
    """A wait of the controller's own machinery (not a group call) ran past its deadline, e.g. a
    schedule's producer waiting for weights that the training loop never publishes."""

    def __init__(self, message: str, timeout: Optional[float] = None):
        self.timeout = timeout
        super().__init__(message)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def translate_error(err: Exception, group: str, rank: int, method: str) -> Exception:
    if isinstance(err, RayTaskError):
        cause = err.cause if err.cause is not None else err
        tb = _ANSI.sub("", getattr(err, "traceback_str", "") or str(err))
        return WorkerError(group, rank, method, f"{type(cause).__name__}: {cause}\n--- remote traceback ---\n{tb}")
    if isinstance(err, RayActorError):
        text = _ANSI.sub("", str(err)).strip() or type(err).__name__
        lines = text.splitlines()
        # A raising constructor: keep Ray's remote traceback, whose last line is the cause.
        detail = text if len(lines) > 1 and "creation task" in lines[0] else lines[0]
        return WorkerDiedError(group, rank, method, detail)
    return err


class GroupHandle:
    """Pending results of one group call. Wait with `.wait(timeout)` or `await handle`."""

    def __init__(self, group: str, method: str, ranks: List[int], refs: List[Any], default_timeout: float):
        self.group, self.method, self.ranks, self.refs = group, method, ranks, refs
        self._timeout = default_timeout
        self._results: Optional[List[Any]] = None
        self.durations: List[float] = []
        self.spans: List[tuple] = []

    def _finish(self, outputs: List[tuple]) -> List[Any]:
        self._results = [out[0] for out in outputs]
        self.spans = [(out[1], out[2]) for out in outputs]
        self.durations = [end - start for start, end in self.spans]
        return self._results

    def peer_results(self) -> List[PeerResult]:
        """Each rank's result by reference, to pass as an argument of another group's call (`call_per_rank`):
        that rank fetches it itself once it is ready, without a round trip through the controller."""
        return [PeerResult(ref, f"{self.group}.{self.method}[{rank}]") for ref, rank in zip(self.refs, self.ranks)]

    def done(self) -> bool:
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        return len(ready) == len(self.refs)

    def wait(self, timeout: Optional[float] = None) -> List[Any]:
        """Per-rank results in rank order. Raises on the first rank that fails, without waiting for the rest."""
        if self._results is not None:
            return self._results
        timeout = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = list(self.refs)
        index = {ref: i for i, ref in enumerate(self.refs)}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeoutError(self.group, [self.ranks[index[r]] for r in pending], self.method, timeout)
            ready, pending = ray.wait(pending, num_returns=1, timeout=min(left, 1.0))
            for ref in ready:
                try:
                    ray.get(ref, timeout=max(left, 1.0))
                except (RayTaskError, RayActorError) as e:
                    raise translate_error(e, self.group, self.ranks[index[ref]], self.method) from None
                except GetTimeoutError:
                    raise WorkerTimeoutError(self.group, [self.ranks[index[ref]]], self.method, timeout) from None
        # every ref is ready (each was fetched above), so this returns at once; the bound is a safeguard
        return self._finish(ray.get(self.refs, timeout=max(deadline - time.monotonic(), 1.0)))

    async def _wait_async(self, timeout: Optional[float]) -> List[Any]:
        timeout = self._timeout if timeout is None else timeout
        outputs: List[Any] = []

        async def collect() -> None:
            for i, ref in enumerate(self.refs):
                try:
                    outputs.append(await ref)
                except (RayTaskError, RayActorError) as e:
                    raise translate_error(e, self.group, self.ranks[i], self.method) from None

        # asyncio.wait_for, not asyncio.timeout: the package supports Python 3.10 (asyncio.timeout is 3.11+);
        # on 3.10 wait_for raises asyncio.TimeoutError, an alias of TimeoutError from 3.11 on.
        try:
            await asyncio.wait_for(collect(), timeout)
        except asyncio.TimeoutError:
            raise WorkerTimeoutError(self.group, self.ranks[len(outputs):], self.method, timeout) from None
        return self._finish(outputs)

    def __await__(self):
        if self._results is not None:
            return _resolved(self._results).__await__()
        return self._wait_async(None).__await__()


async def _resolved(value):
    return value


def wait_first(handles: Sequence[GroupHandle], timeout: Optional[float] = None) -> int:
    """Block until one of `handles` has every rank returned (finished or failed); returns the index of the
    first such handle in list order (pass them oldest first). Its `wait()` then gives the results or raises
    the failed rank's error. Raises WorkerTimeoutError for the first handle when none completes within
    `timeout` (default: that handle's group timeout)."""
    if not handles:
        raise ValueError("wait_first needs at least one handle")
    timeout = handles[0]._timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    ready: set = set()
    waiting = [ref for handle in handles if handle._results is None for ref in handle.refs]
    while True:
        for i, handle in enumerate(handles):
            if handle._results is not None or all(ref in ready for ref in handle.refs):
                return i
        left = deadline - time.monotonic()
        if left <= 0:
            first = handles[0]
            raise WorkerTimeoutError(first.group, first.ranks, first.method, timeout)
        # one ref per call (a multi-rank handle is complete once all its refs are): one Ray call per event
        newly, waiting = ray.wait(waiting, num_returns=1, timeout=min(left, 1.0))
        ready.update(newly)


class WorkerGroup:
    """N Ray actors of `worker_cls`, rank i on `devices[i]`, with one torch.distributed group."""

    def __init__(self, cluster: Cluster, worker_cls: type, name: str, devices: Sequence[int],
                 args: tuple = (), kwargs: Optional[dict] = None, init_dist: bool = True, wait_ready: bool = True):
        """Start the ranks. With `wait_ready=False` this returns once they are launched, so several
        groups start side by side; call `ready()` on each before using it."""
        if not issubclass(worker_cls, Worker):
            raise TypeError(f"{worker_cls.__name__} must subclass rlinf.scheduler.Worker")
        self.cluster, self.name, self.devices = cluster, name, list(devices)
        self.worker_cls = worker_cls
        self.timeout = cluster.cfg.wait_timeout_s
        remote_cls = ray.remote(rank_class(worker_cls))
        self.actors = []
        for rank, dev in enumerate(self.devices):
            identity = {"RLINF_GROUP": name, "RLINF_RANK": str(rank), "RLINF_WORLD_SIZE": str(len(self.devices)),
                        "RLINF_DEVICE": str(dev), "RLINF_NODE_IP": cluster.device(dev).node_ip}
            opts = cluster.actor_options(dev, name=f"{name}:{rank}:{id(self)}")
            opts["max_concurrency"] = getattr(worker_cls, "max_concurrency", 1)
            self.actors.append(remote_cls.options(**opts).remote(identity, *args, **(kwargs or {})))
        self._pending_ping: Optional[_UntimedHandle] = self._call_raw("_rlinf_ping", list(range(self.size)),
                                                                      [()] * self.size)
        self._pending_ping.method = f"__init__ of {worker_cls.__name__}"
        self._pending_init_dist = init_dist
        if wait_ready:
            self.ready()

    def ready(self) -> "WorkerGroup":
        """Wait until every rank is constructed (a raising __init__ surfaces here, naming the rank) and,
        when asked for, the group's process group exists. Idempotent."""
        if self._pending_ping is not None:
            ping, self._pending_ping = self._pending_ping, None
            ping.wait(self.timeout)
            if self._pending_init_dist:
                self._init_dist()
        return self

    @property
    def size(self) -> int:
        return len(self.actors)

    def _init_dist(self) -> None:
        addr, port = ray.get(self.actors[0]._rlinf_free_port.remote(), timeout=self.timeout)
        self._call_raw("_rlinf_init_dist", list(range(self.size)),
                       [(addr, port, self.cluster.backend, self.timeout)] * self.size).wait(self.timeout)

    def _call_raw(self, method: str, ranks: List[int], per_rank_args: List[tuple], kwargs: Optional[dict] = None,
                  timed: bool = False) -> GroupHandle:
        refs = []
        for rank, args in zip(ranks, per_rank_args):
            actor = self.actors[rank]
            if timed:
                refs.append(actor._rlinf_execute.remote(method, args, kwargs or {}))
            else:
                refs.append(getattr(actor, method).remote(*args, **(kwargs or {})))
        return GroupHandle(self.name, method, ranks, refs, self.timeout) if timed else _UntimedHandle(
            self.name, method, ranks, refs, self.timeout)

    def call(self, method: str, *args: Any, ranks: Optional[Sequence[int]] = None, **kwargs: Any) -> GroupHandle:
        """Run `method(*args, **kwargs)` on `ranks` (default all); returns a handle at once."""
        ranks = list(range(self.size)) if ranks is None else list(ranks)
        self._check_method(method)
        return self._call_raw(method, ranks, [args] * len(ranks), kwargs, timed=True)

    def scatter(self, method: str, shards: Sequence[Any], ranks: Optional[Sequence[int]] = None,
                **kwargs: Any) -> GroupHandle:
        """Run `method(shards[i], **kwargs)` on the i-th targeted rank."""
        ranks = list(range(self.size)) if ranks is None else list(ranks)
        if len(shards) != len(ranks):
            raise ValueError(f"{self.name}.scatter({method}): {len(shards)} shards for {len(ranks)} ranks")
        self._check_method(method)
        return self._call_raw(method, ranks, [(s,) for s in shards], kwargs, timed=True)

    def call_per_rank(self, method: str, per_rank_args: Sequence[tuple], **kwargs: Any) -> GroupHandle:
        """Run `method(*per_rank_args[i], **kwargs)` on rank i of every rank (a `PeerResult` among the
        arguments is fetched by the rank before the method runs)."""
        if len(per_rank_args) != self.size:
            raise ValueError(f"{self.name}.call_per_rank({method}): {len(per_rank_args)} argument tuples for "
                             f"{self.size} ranks")
        self._check_method(method)
        return self._call_raw(method, list(range(self.size)), [tuple(a) for a in per_rank_args], kwargs, timed=True)

    def __getattr__(self, method: str):
        if method.startswith("_") or not callable(getattr(self.__dict__.get("worker_cls"), method, None)):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def _check_method(self, method: str) -> None:
        if not callable(getattr(self.worker_cls, method, None)):
            raise AttributeError(f"{self.worker_cls.__name__} (group '{self.name}') has no method '{method}'")

    def link(self, other: "WorkerGroup") -> str:
        """Join both groups' ranks into one process group for `send_tensor`/`recv_tensor`/broadcasts.

        Link ranks: this group's ranks first (0..n-1), then the other's (n..n+m-1). The link is NCCL on
        GPUs unless the groups share a GPU (colocated): one NCCL communicator cannot hold two ranks of one
        GPU, so that link is gloo and its tensors travel through host memory (`Worker.link_wire`); the
        colocated bulk path (CUDA IPC) does not use the link.
        """
        link = f"{self.name}<->{other.name}"
        backend = self.cluster.backend
        if backend == "nccl" and set(self.devices) & set(other.devices):
            backend = "gloo"
        addr, port = ray.get(self.actors[0]._rlinf_free_port.remote(), timeout=self.timeout)
        size = self.size + other.size
        refs = []
        for rank, actor in enumerate(self.actors):
            refs.append(actor._rlinf_join_link.remote(link, addr, port, rank, size, self.size, 0,
                                                      backend, self.timeout))
        for rank, actor in enumerate(other.actors):
            refs.append(actor._rlinf_join_link.remote(link, addr, port, self.size + rank, size, 0, self.size,
                                                      backend, self.timeout))
        names = [(self.name, r) for r in range(self.size)] + [(other.name, r) for r in range(other.size)]
        for (gname, rank), ref in zip(names, refs):
            try:
                ray.get(ref, timeout=self.timeout)
            except (RayTaskError, RayActorError) as e:
                raise translate_error(e, gname, rank, "link") from None
        return link

    def pop_events(self, timeout: Optional[float] = None) -> List[dict]:
        """Timeline events of every rank since the last call: dicts with group, rank, name, start, end."""
        events = []
        for rank, per_rank in enumerate(self._call_raw("_rlinf_pop_events", list(range(self.size)),
                                                       [()] * self.size).wait(timeout)):
            events.extend({**e, "group": self.name, "rank": rank} for e in per_rank)
        return events

    def kill(self) -> None:
        """Stop every rank now (no graceful shutdown)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        self.cluster.release_group_files(self.name)  # no destructor ran: the controller removes their files

    def shutdown(self, timeout: float = 10.0) -> None:
        """Tear down process groups and stop the actors; dead ranks are skipped."""
        try:
            self._call_raw("_rlinf_shutdown", list(range(self.size)), [()] * self.size).wait(timeout)
        except (WorkerError, WorkerTimeoutError) as e:
            logger.warning("%s: shutdown incomplete (%s); killing", self.name, e)
        self.kill()


class _UntimedHandle(GroupHandle):
    """Handle for internal calls that return plain values (no timing tuple)."""

    def _finish(self, outputs: List[Any]) -> List[Any]:
        self._results = list(outputs)
        return self._results
