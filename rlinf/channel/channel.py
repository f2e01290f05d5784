"""Channel: a named streaming queue between worker groups, served by one async Ray actor.

`Channel` is the client. It is picklable (it holds the actor handle), so it can be passed to any
Ray actor. Items other than small scalars/strings travel through the Ray object store: the client
`ray.put`s them and sends the ObjectRef wrapped in a small record (so Ray does not resolve it on
the way), the channel actor only queues references, and the consumer `ray.get`s the data
(zero-copy for numpy arrays, which therefore arrive read-only). A producer process must stay
alive until its items are consumed (it owns them).

Nothing is dropped silently: a put on a closed channel raises ChannelClosed and is counted in
`stats()["dropped"]["put_after_close"]`; `destroy(reason)` counts what is still queued under
`reason`; a get cancelled or timed out while the actor answered hands its items back (they are
delivered next); a short batch after close is counted in `short_gets`.

Every blocking call takes `timeout` in seconds; None means the channel's `default_timeout`
(600 s unless set at creation), so no call waits forever. The actor gives up at the timeout and
the client's own `ray.get` waits a margin longer, then raises `ChannelTimeout`.
"""

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Hashable, List, NamedTuple, Optional, Sequence, Tuple

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from rlinf.channel.core import ChannelClosed, ChannelCore, ChannelGone, ChannelTimeout, Envelope

logger = logging.getLogger(__name__)

NAMESPACE = "rlinf"
DEFAULT_TIMEOUT_S = 600.0
ACTOR_PREFIX = "rlinf.channel."
_CALL_MARGIN_S = 30.0  # the client's ray.get outlives the actor-side timeout by this much
_KILL_WAIT_S = 10.0  # how long destroy waits for a killed channel actor to stop answering
_MAX_CONCURRENCY = 4096  # blocked waiters the actor can hold at once
_INLINE_MAX_LEN = 1024  # str/bytes up to this length are sent inline, not via the object store
_INLINE_TYPES = (bool, int, float, complex, type(None))

_OK, _TIMEOUT, _CLOSED, _INVALID = "ok", "timeout", "closed", "invalid"
_Result = Tuple[str, Any]


class _StoredItem(NamedTuple):
    """An item placed in the object store; the wrapper keeps Ray from resolving the reference."""

    ref: ray.ObjectRef


def _pack(item: Any) -> Any:
    if isinstance(item, _INLINE_TYPES) or (isinstance(item, (str, bytes)) and len(item) <= _INLINE_MAX_LEN):
        return item
    return _StoredItem(ray.put(item))


def _stored_refs(envelopes: Sequence[Envelope]) -> List[ray.ObjectRef]:
    return [e.item.ref for e in envelopes if isinstance(e.item, _StoredItem)]


def _fill(envelopes: List[Envelope], values: Sequence[Any]) -> List[Envelope]:
    it = iter(values)
    for env in envelopes:
        if isinstance(env.item, _StoredItem):
            env.item = next(it)
    return envelopes


class _ChannelActor:
    """Server side: a `ChannelCore` guarded by one asyncio.Condition; waiters re-check on change."""

    def __init__(self, capacity: int, max_staleness: Optional[int], batch_size: int, default_timeout: float):
        self._core = ChannelCore(capacity, max_staleness, batch_size)
        self._default_timeout = default_timeout
        self._cond: Optional[asyncio.Condition] = None  # made on first use, inside the actor's loop
        self._waiting = {"admit": 0, "put": 0, "get": 0}  # calls blocked right now, by kind

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def _until(self, kind: str, attempt: Callable[[], Optional[_Result]], timeout: float) -> _Result:
        """Run `attempt` under the lock until it returns a result or `timeout` passes; a successful
        attempt changed the state, so every waiter is woken to re-check its own condition."""
        cond = self._condition()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with cond:
            while True:
                result = attempt()
                if result is not None:
                    if result[0] == _OK:
                        cond.notify_all()
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _TIMEOUT, None
                self._waiting[kind] += 1
                try:
                    await asyncio.wait_for(cond.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
                finally:
                    self._waiting[kind] -= 1

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def admit(self, version: int, n: int, timeout: float) -> _Result:
        if n < 1:
            return _INVALID, f"admit count must be >= 1, got {n}"
        core = self._core

        def attempt() -> Optional[_Result]:
            if core.closed:
                return _CLOSED, None
            return (_OK, None) if core.try_admit(version, n) else None

        return await self._until("admit", attempt, timeout)

    async def cancel(self, version: int, n: int) -> _Result:
        try:
            self._core.cancel(version, n)
        except ValueError as e:
            return _INVALID, str(e)
        await self._notify()
        return _OK, None

    async def put(self, items: list, version: int, producer: Optional[Hashable], timeout: float) -> _Result:
        core = self._core
        try:
            core.check_put(version, len(items))
        except ValueError as e:
            return _INVALID, str(e)

        def attempt() -> Optional[_Result]:
            if not core.has_room(version, len(items)):
                return None
            try:
                core.put(items, version, producer)  # closed: refused and counted as dropped
            except ChannelClosed:
                return _CLOSED, None
            except ValueError as e:  # its admission was cancelled while it waited for room
                return _INVALID, str(e)
            return _OK, None

        return await self._until("put", attempt, timeout)

    async def get(self, n: int, timeout: float) -> _Result:
        core = self._core
        if n < 1 or (core.capacity and n > core.capacity):
            return _INVALID, f"get of {n} item(s) from a channel of capacity {core.capacity or 'unbounded'}"

        def attempt() -> Optional[_Result]:
            try:
                taken = core.get(n)  # closed: what is left (counted when short), then ChannelClosed
            except ChannelClosed:
                return _CLOSED, None
            return None if taken is None else (_OK, taken)

        return await self._until("get", attempt, timeout)

    async def restore(self, envelopes: List[Envelope]) -> None:
        """Take back items a client received but could not hand to its caller (see `Channel._recover`)."""
        self._core.restore(envelopes)
        logger.warning("channel: %d item(s) handed back by a cancelled or timed-out get; queued again at the head",
                       len(envelopes))
        await self._notify()

    async def discard(self, reason: str) -> dict:
        """Close, drop what is queued (counted under `reason`) and return the final stats."""
        self._core.discard(reason)
        await self._notify()
        return await self.stats()

    async def close(self) -> None:
        self._core.close()
        await self._notify()

    async def qsize(self) -> int:
        return self._core.qsize()

    async def consumer_version(self) -> int:
        return self._core.consumer_version()

    async def stats(self) -> dict:
        return {**self._core.stats(), "waiting": dict(self._waiting)}

    async def config(self) -> dict:
        core = self._core
        return {"capacity": core.capacity, "max_staleness": core.max_staleness, "batch_size": core.batch_size,
                "default_timeout": self._default_timeout}


_RemoteChannelActor = ray.remote(_ChannelActor)


class Channel:
    """Client of a named channel. Create with `Channel.create`, find with `Channel.get_by_name`."""

    def __init__(self, name: str, actor: "ray.actor.ActorHandle", default_timeout: float = DEFAULT_TIMEOUT_S):
        self.name = name
        self._actor = actor
        self.default_timeout = default_timeout

    # ---- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, capacity: int = 0, max_staleness: Optional[int] = None, batch_size: int = 1,
               *, namespace: str = NAMESPACE, default_timeout: float = DEFAULT_TIMEOUT_S) -> "Channel":
        """Start the channel actor `name` (ValueError if the name is taken or arguments are bad).

        `capacity`: most items queued (0 = unbounded). `max_staleness`: None = no admission
        control; else every put must be admitted first (see `admit`) and a consumed item's version
        lags the consumer version (consumed // `batch_size`) by at most this much.
        """
        ChannelCore(capacity, max_staleness, batch_size)  # validate arguments here, not in the actor
        try:
            actor = _RemoteChannelActor.options(
                name=ACTOR_PREFIX + name, namespace=namespace, num_cpus=0, max_concurrency=_MAX_CONCURRENCY,
                max_restarts=0,
            ).remote(capacity, max_staleness, batch_size, default_timeout)
        except ValueError as e:
            raise ValueError(f"cannot create channel '{name}' in namespace '{namespace}': {e}") from None
        channel = cls(name, actor, default_timeout)
        channel._call(actor.config.remote(), 60.0, "create")  # surface start-up failures now
        logger.debug("channel '%s' created (capacity=%d, max_staleness=%s, batch_size=%d)",
                     name, capacity, max_staleness, batch_size)
        return channel

    @classmethod
    def get_by_name(cls, name: str, namespace: str = NAMESPACE) -> "Channel":
        """Client of an existing channel (ValueError if there is none of that name)."""
        actor = ray.get_actor(ACTOR_PREFIX + name, namespace=namespace)
        probe = cls(name, actor)
        cfg = probe._call(actor.config.remote(), 60.0, "get_by_name")
        return cls(name, actor, cfg["default_timeout"])

    def destroy(self, reason: str = "unconsumed_at_destroy") -> Optional[dict]:
        """Close the channel, count what is still queued as dropped under `reason` (logged by the
        actor), and kill the actor. Returns the final `stats()` (with `dropped`), or None when the
        actor was already gone. Other clients then get ChannelClosed."""
        final = None
        try:
            final = self._call(self._actor.discard.remote(reason), 0.0, "destroy")
        except (ChannelClosed, ChannelTimeout) as e:
            logger.warning("channel '%s': no final counts at destroy (%s)", self.name, e)
        else:
            dropped = final["dropped"].get(reason, 0)
            if dropped:
                logger.warning("channel '%s': %d queued item(s) dropped at destroy (%s)", self.name, dropped, reason)
        ray.kill(self._actor, no_restart=True)
        self._wait_gone()
        return final

    # ---- producer side --------------------------------------------------------------------------
    def admit(self, version: int, n: int = 1, timeout: Optional[float] = None) -> None:
        """Block until `n` items of weight `version` may be started (no-op without max_staleness)."""
        t = self._timeout(timeout)
        self._unwrap(self._call(self._actor.admit.remote(version, n, t), t, "admit"), t, "admit")

    def cancel(self, version: int, n: int = 1) -> None:
        """Give back `n` admitted, not yet put items of `version` (e.g. their work failed)."""
        self._unwrap(self._call(self._actor.cancel.remote(version, n), 0.0, "cancel"), 0.0, "cancel")

    def put(self, item: Any, version: int = 0, producer: Optional[Hashable] = None,
            timeout: Optional[float] = None) -> None:
        """Queue `item`; waits while the channel is at capacity."""
        self.put_batch([item], version, producer, timeout)

    def put_batch(self, items: Sequence[Any], version: int = 0, producer: Optional[Hashable] = None,
                  timeout: Optional[float] = None) -> None:
        """Queue `items` together (they stay consecutive for their producer)."""
        t = self._timeout(timeout)
        ref = self._actor.put.remote([_pack(x) for x in items], version, producer, t)
        self._unwrap(self._call(ref, t, "put"), t, "put")

    # ---- consumer side --------------------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> Any:
        return self.get_batch_with_meta(1, timeout)[0].item

    def get_batch(self, n: int, timeout: Optional[float] = None) -> List[Any]:
        """The next `n` items. After close, fewer if fewer are left (counted in stats()["short_gets"]
        and logged); ChannelClosed if none are."""
        return [e.item for e in self.get_batch_with_meta(n, timeout)]

    def get_with_meta(self, timeout: Optional[float] = None) -> Envelope:
        return self.get_batch_with_meta(1, timeout)[0]

    def get_batch_with_meta(self, n: int, timeout: Optional[float] = None) -> List[Envelope]:
        t = self._timeout(timeout)
        ref = self._actor.get.remote(n, t)
        try:
            result = self._call(ref, t, "get")
        except ChannelTimeout:  # the actor may still answer: its items go back into the channel
            self._recover(ref, t)
            raise
        envelopes = self._unwrap(result, t, "get")
        refs = _stored_refs(envelopes)
        return _fill(envelopes, self._call(refs, t, "get") if refs else [])

    # ---- async variants (for asyncio code, e.g. async Ray actors) -------------------------------
    async def async_admit(self, version: int, n: int = 1, timeout: Optional[float] = None) -> None:
        t = self._timeout(timeout)
        self._unwrap(await self._acall(self._actor.admit.remote(version, n, t), t, "admit"), t, "admit")

    async def async_put(self, item: Any, version: int = 0, producer: Optional[Hashable] = None,
                        timeout: Optional[float] = None) -> None:
        await self.async_put_batch([item], version, producer, timeout)

    async def async_put_batch(self, items: Sequence[Any], version: int = 0, producer: Optional[Hashable] = None,
                              timeout: Optional[float] = None) -> None:
        t = self._timeout(timeout)
        ref = self._actor.put.remote([_pack(x) for x in items], version, producer, t)
        self._unwrap(await self._acall(ref, t, "put"), t, "put")

    async def async_get(self, timeout: Optional[float] = None) -> Any:
        return (await self.async_get_batch_with_meta(1, timeout))[0].item

    async def async_get_batch(self, n: int, timeout: Optional[float] = None) -> List[Any]:
        return [e.item for e in await self.async_get_batch_with_meta(n, timeout)]

    async def async_get_with_meta(self, timeout: Optional[float] = None) -> Envelope:
        return (await self.async_get_batch_with_meta(1, timeout))[0]

    async def async_get_batch_with_meta(self, n: int, timeout: Optional[float] = None) -> List[Envelope]:
        t = self._timeout(timeout)
        ref = self._actor.get.remote(n, t)
        try:
            result = await self._acall(ref, t, "get")
        except (asyncio.CancelledError, ChannelTimeout):
            # The actor may have handed out items as the call was cancelled or timed out: they go
            # back into the channel instead of being lost.
            self._recover(ref, t)
            raise
        envelopes = self._unwrap(result, t, "get")
        refs = _stored_refs(envelopes)
        try:
            values = await self._acall(asyncio.gather(*refs), t, "get") if refs else []
        except asyncio.CancelledError:
            self._hand_back(envelopes)  # taken but not delivered: back into the channel
            raise
        return _fill(envelopes, values)

    # ---- control and introspection --------------------------------------------------------------
    def close(self) -> None:
        """Close: putters and admitters fail at once, getters once the queue is drained."""
        self._call(self._actor.close.remote(), 0.0, "close")

    def qsize(self) -> int:
        return self._call(self._actor.qsize.remote(), 0.0, "qsize")

    def consumer_version(self) -> int:
        """Items consumed // batch_size: the weight version the consumer is at."""
        return self._call(self._actor.consumer_version.remote(), 0.0, "consumer_version")

    def stats(self) -> dict:
        """Counters: produced, consumed, dropped ({reason: items}; produced == consumed + qsize +
        sum(dropped)), short_gets (gets answered short after close), restored (items handed back by
        cancelled gets), puts, gets, qsize, in_flight, admitted, max_staleness_seen,
        staleness_histogram, waiting (calls blocked now: {"admit": k, "put": k, "get": k}) and the
        channel's settings."""
        return self._call(self._actor.stats.remote(), 0.0, "stats")

    # ---- internals ------------------------------------------------------------------------------
    def _wait_gone(self) -> None:
        """`ray.kill` returns before the actor is dead, and calls already on their way may still be
        answered; wait (bounded) until it no longer answers, so every later call is ChannelGone."""
        deadline = time.monotonic() + _KILL_WAIT_S
        while time.monotonic() < deadline:
            try:
                ray.get(self._actor.qsize.remote(), timeout=1.0)
            except RayActorError:
                return
            except GetTimeoutError:
                continue
            time.sleep(0.02)
        logger.warning("channel '%s': the actor still answered %g s after it was killed", self.name, _KILL_WAIT_S)

    def _timeout(self, timeout: Optional[float]) -> float:
        if timeout is None:
            return self.default_timeout
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        return float(timeout)

    def _call(self, ref: Any, timeout: float, op: str) -> Any:
        try:
            return ray.get(ref, timeout=timeout + _CALL_MARGIN_S)
        except GetTimeoutError:
            raise ChannelTimeout(f"channel '{self.name}': {op} got no answer from the channel actor") from None
        except RayActorError as e:
            raise ChannelGone(f"channel '{self.name}': the channel actor is gone ({op})") from e

    def _recover(self, ref: ray.ObjectRef, timeout: float) -> None:
        """A get whose answer its caller will never see (cancelled or timed out): cancel the actor
        call, and if it answered with items anyway, hand them back to the channel (`restore`), from
        a helper thread so the caller is not held up. Nothing is lost, nothing delivered twice."""
        try:
            ray.cancel(ref)
        except (ray.exceptions.RayError, ValueError) as e:  # best effort; the answer is still checked below
            logger.debug("channel '%s': cancel of a get failed: %s", self.name, e)
        threading.Thread(target=self._restore_answer, args=(ref, timeout), daemon=True,
                         name=f"rlinf-channel-recover-{self.name}").start()

    def _restore_answer(self, ref: ray.ObjectRef, timeout: float) -> None:
        try:
            status, envelopes = ray.get(ref, timeout=timeout + _CALL_MARGIN_S)
        except ray.exceptions.RayError:  # cancelled, actor gone or no answer: nothing was handed out
            return
        if status == _OK and envelopes:
            self._restore(envelopes)

    def _hand_back(self, envelopes: List[Envelope]) -> None:
        threading.Thread(target=self._restore, args=(envelopes,), daemon=True,
                         name=f"rlinf-channel-recover-{self.name}").start()

    def _restore(self, envelopes: List[Envelope]) -> None:
        try:
            ray.get(self._actor.restore.remote(envelopes), timeout=_CALL_MARGIN_S)
        except ray.exceptions.RayError as e:  # logged: these items are lost with the channel
            logger.warning("channel '%s': %d item(s) of a cancelled get could not be handed back: %s",
                           self.name, len(envelopes), e)

    async def _acall(self, awaitable: Any, timeout: float, op: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout + _CALL_MARGIN_S)
        except asyncio.CancelledError:
            # Stop the waiting actor call too, so a cancelled admit or put does not happen later
            # (a cancelled get's answer is also checked and handed back: see `_recover`).
            if isinstance(awaitable, ray.ObjectRef):
                ray.cancel(awaitable)
            raise
        except asyncio.TimeoutError:
            raise ChannelTimeout(f"channel '{self.name}': {op} got no answer from the channel actor") from None
        except RayActorError as e:
            raise ChannelGone(f"channel '{self.name}': the channel actor is gone ({op})") from e

    def _unwrap(self, result: _Result, timeout: float, op: str) -> Any:
        status, value = result
        if status == _OK:
            return value
        if status == _TIMEOUT:
            raise ChannelTimeout(f"channel '{self.name}': {op} timed out after {timeout:g} s")
        if status == _CLOSED:
            raise ChannelClosed(f"channel '{self.name}' is closed ({op})")
        raise ValueError(f"channel '{self.name}': {value}")

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"
