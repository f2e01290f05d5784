"""Channel over a real Ray actor: data round trips, backpressure, timeouts, close, async use, and
property tests with producer/consumer threads at random timings (no loss or duplication, FIFO per
producer, staleness within the bound, close wakes every waiter)."""

import asyncio
import contextlib
import itertools
import pickle
import random
import threading
import time
from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlinf.channel import Channel, ChannelClosed, ChannelTimeout

pytestmark = pytest.mark.timeout(120)
_names = itertools.count()
_PROPERTY_SETTINGS = settings(max_examples=15, deadline=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def make_channel(ray_session):
    """Creates uniquely named channels and destroys them after the test."""
    made = []

    def make(**kwargs):
        ch = Channel.create(f"test-{next(_names)}", default_timeout=30.0, **kwargs)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        ch.destroy()


@contextlib.contextmanager
def _channel(**kwargs):
    """A channel for one hypothesis example (the function-scoped fixture would outlive it)."""
    ch = Channel.create(f"test-{next(_names)}", default_timeout=30.0, **kwargs)
    try:
        yield ch
    finally:
        ch.destroy()


class _Thread(threading.Thread):
    """A thread that keeps its target's result or exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except Exception as e:  # noqa: BLE001 - handed to the test thread
            self.error = e


def _start(fn, *args) -> _Thread:
    t = _Thread(fn, *args)
    t.start()
    return t


def _wait_for_waiters(ch, kind, count, timeout=20.0):
    """Poll until `count` calls of `kind` are blocked in the channel actor."""
    deadline = time.monotonic() + timeout
    while ch.stats()["waiting"][kind] != count:
        assert time.monotonic() < deadline, f"expected {count} blocked {kind} call(s): {ch.stats()['waiting']}"
        time.sleep(0.02)


def _join_all(threads, timeout=30.0):
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a channel waiter did not return"
        if t.error is not None:
            raise t.error


# ---- basics ---------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_roundtrip_tensor_numpy_and_small_items(make_channel):
    ch = make_channel()
    tensor = torch.randn(3, 5)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    ch.put(tensor, version=2, producer="p")
    ch.put_batch([array, {"x": tensor}, 7, "s"], version=3, producer="p")
    env = ch.get_with_meta()
    assert torch.equal(env.item, tensor)
    assert (env.version, env.producer, env.seq) == (2, "p", 0)
    got = ch.get_batch(4)
    np.testing.assert_array_equal(got[0], array)
    assert torch.equal(got[1]["x"], tensor)
    assert got[2:] == [7, "s"]
    stats = ch.stats()
    assert (stats["puts"], stats["gets"], stats["qsize"]) == (5, 5, 0)


@pytest.mark.timeout(60)
def test_backpressure_blocks_at_capacity_and_times_out(make_channel):
    ch = make_channel(capacity=2)
    ch.put_batch([1, 2])
    with pytest.raises(ChannelTimeout):
        ch.put(3, timeout=0.2)
    blocked = _start(ch.put, 3, 0, None, 10.0)
    _wait_for_waiters(ch, "put", 1)
    assert blocked.is_alive() and ch.qsize() == 2
    assert ch.get() == 1
    _join_all([blocked])
    assert ch.get_batch(2) == [2, 3]
    with pytest.raises(ValueError):
        ch.get_batch(3)  # can never fit in a queue of capacity 2


@pytest.mark.timeout(60)
def test_get_timeout(make_channel):
    ch = make_channel()
    with pytest.raises(ChannelTimeout, match="timed out after 0.2 s"):  # the actor's answer, not the client's
        ch.get(timeout=0.2)
    stats = ch.stats()
    assert stats["waiting"]["get"] == 0 and stats["gets"] == 0  # the getter left, having taken nothing
    ch.put("later")
    assert ch.get(timeout=5) == "later"


@pytest.mark.timeout(60)
def test_close_wakes_blocked_getter_and_putter_and_drains(make_channel):
    empty, full = make_channel(), make_channel(capacity=1)
    full.put("kept")
    getter = _start(empty.get, 10.0)
    putter = _start(full.put, "refused", 0, None, 10.0)
    _wait_for_waiters(empty, "get", 1)
    _wait_for_waiters(full, "put", 1)
    empty.close()
    full.close()
    getter.join(10)
    putter.join(10)
    assert isinstance(getter.error, ChannelClosed) and isinstance(putter.error, ChannelClosed)
    assert full.get_batch(1) == ["kept"]  # what was queued is drained after close
    with pytest.raises(ChannelClosed):
        full.get(timeout=1)
    with pytest.raises(ChannelClosed):
        full.put(1)
    stats = full.stats()  # the refused puts are counted, nothing vanished
    assert stats["dropped"] == {"put_after_close": 2}
    assert stats["produced"] == stats["consumed"] + stats["qsize"] + 2 == 3


@pytest.mark.timeout(60)
def test_async_api(make_channel):
    ch = make_channel(capacity=2)

    async def main():
        async def produce():
            for i in range(6):
                await ch.async_put(torch.full((4,), float(i)), version=0, producer="a")

        async def consume():
            out = []
            for _ in range(3):
                out += await ch.async_get_batch(2, timeout=10)
            return out

        consumer = asyncio.ensure_future(consume())
        await produce()
        return await consumer

    got = asyncio.run(main())
    assert [int(t[0]) for t in got] == list(range(6))

    async def timed_out():
        with pytest.raises(ChannelTimeout):
            await ch.async_get(timeout=0.2)
        await ch.async_put_batch([1, 2])
        env = await ch.async_get_with_meta()
        assert await ch.async_get() == 2
        return env

    assert asyncio.run(timed_out()).item == 1

    async def cancelled_getter_takes_nothing():
        getter = asyncio.ensure_future(ch.async_get(timeout=20))
        await asyncio.sleep(0)  # let the getter send its call
        _wait_for_waiters(ch, "get", 1)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        _wait_for_waiters(ch, "get", 0)
        await ch.async_put("kept")
        return await ch.async_get(timeout=5)

    assert asyncio.run(cancelled_getter_takes_nothing()) == "kept"


@pytest.mark.timeout(90)
def test_client_is_picklable_and_found_by_name(make_channel, ray_session):
    ray = ray_session
    ch = make_channel()
    assert pickle.loads(pickle.dumps(ch)).qsize() == 0
    assert Channel.get_by_name(ch.name).default_timeout == 30.0

    @ray.remote(num_cpus=0)
    class AsyncProducer:
        async def produce(self, channel, n):
            for i in range(n):
                await channel.async_put(np.full(1000, i), producer="actor")
            return n

    producer = AsyncProducer.remote()
    assert ray.get(producer.produce.remote(ch, 3), timeout=60) == 3
    assert [int(a[0]) for a in ch.get_batch(3)] == [0, 1, 2]
    ray.kill(producer)
    with pytest.raises(ValueError):
        Channel.create(ch.name)  # name taken


@pytest.mark.timeout(60)
def test_admission_controls_puts_and_ordering(make_channel):
    ch = make_channel(max_staleness=1, batch_size=2)
    with pytest.raises(ValueError):
        ch.put("never admitted", version=0)
    ch.admit(0, 3)
    ch.admit(0)
    with pytest.raises(ChannelTimeout):
        ch.admit(0, timeout=0.2)  # (0 + 1 + 1) * 2 = 4 admitted already
    ch.cancel(0)
    ch.admit(0)
    with pytest.raises(ValueError):
        ch.cancel(5)
    ch.put_batch(["a", "b", "c"], version=0)
    assert [e.staleness for e in ch.get_batch_with_meta(2)] == [0, 0]
    ch.admit(1)  # consumer version is 1 now: limit 6
    ch.put("new", version=1)
    with pytest.raises(ChannelTimeout):
        ch.get_batch(2, timeout=0.2)  # "new" cannot overtake the version-0 item still in flight
    ch.put("d", version=0)
    assert ch.get_batch(2) == ["c", "d"]
    stats = ch.stats()
    assert stats["max_staleness_seen"] == 1 and stats["staleness_histogram"] == {0: 2, 1: 2}
    assert ch.consumer_version() == 2
    ch.admit(2)
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.admit(2)
    assert ch.get_batch(2) == ["new"]  # the admitted-but-unput version-2 item was dropped at close


@pytest.mark.timeout(60)
def test_destroy_counts_what_is_queued_and_short_gets_are_counted(ray_session):
    ch = Channel.create(f"test-{next(_names)}", default_timeout=30.0)
    ch.put_batch([1, 2, 3, 4])
    assert ch.get_batch(1) == [1]
    final = ch.destroy(reason="unconsumed_at_stop")
    assert final["dropped"] == {"unconsumed_at_stop": 3} and final["qsize"] == 0
    assert final["produced"] == final["consumed"] + sum(final["dropped"].values())
    with pytest.raises(ChannelClosed):  # the actor is gone
        ch.qsize()
    assert ch.destroy() is None  # destroying twice: nothing left to count

    ch = Channel.create(f"test-{next(_names)}", default_timeout=30.0)
    try:
        ch.put_batch(["a", "b"])
        ch.close()
        assert ch.get_batch(3) == ["a", "b"]  # the rest, flagged as a short batch
        assert ch.stats()["short_gets"] == 1
    finally:
        ch.destroy()


@pytest.mark.timeout(60)
def test_get_answered_while_cancelled_is_handed_back(make_channel):
    """The actor hands an item to a get whose caller is cancelled at that moment: the item goes back
    to the head of the channel (not lost, not duplicated) and the next get receives it."""
    ch = make_channel()

    async def main():
        getter = asyncio.ensure_future(ch.async_get_with_meta(timeout=20))
        await asyncio.sleep(0)  # let the getter send its call
        _wait_for_waiters(ch, "get", 1)
        ch.put_batch(["first", "second"])  # the waiting getter is answered with "first" ...
        while ch.stats()["gets"] != 1:  # (blocking this loop: the getter cannot resume meanwhile)
            time.sleep(0.01)
        getter.cancel()  # ... but it is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await getter
        while ch.stats()["restored"] != 1:
            await asyncio.sleep(0.01)
        return [e.item for e in await ch.async_get_batch_with_meta(2, timeout=5)]

    assert asyncio.run(main()) == ["first", "second"]
    stats = ch.stats()
    assert (stats["produced"], stats["consumed"], stats["restored"], stats["dropped"]) == (2, 2, 1, {})


# ---- property tests -------------------------------------------------------------------------------
def _check_delivery(envelopes, expected_counts):
    """No item lost or duplicated; FIFO per producer (in global delivery order)."""
    envelopes = sorted(envelopes, key=lambda e: e.delivered_index)
    assert [e.delivered_index for e in envelopes] == list(range(len(envelopes)))
    per_producer = defaultdict(list)
    for env in envelopes:
        producer, index = env.item
        assert producer == env.producer
        per_producer[producer].append((index, env.seq))
    assert set(per_producer) == {p for p, n in expected_counts.items() if n}
    for producer, got in per_producer.items():
        assert got == [(i, i) for i in range(expected_counts[producer])]


def _consume_until_closed(ch, batch, rng, out, lock, after_batch=None):
    while True:
        try:
            envelopes = ch.get_batch_with_meta(batch, timeout=30)
        except ChannelClosed:
            return
        with lock:
            out.extend(envelopes)
        if after_batch is not None:
            after_batch(envelopes)
        time.sleep(rng.uniform(0, 0.004))


@pytest.mark.timeout(120)
@_PROPERTY_SETTINGS
@given(items=st.lists(st.integers(0, 6), min_size=1, max_size=3), consumers=st.integers(1, 3),
       capacity=st.integers(0, 3), batch=st.integers(1, 2), extra_waiters=st.integers(0, 2), seed=st.integers(0, 999))
def test_property_producers_consumers_no_loss_fifo_close(ray_session, items, consumers, capacity, batch,
                                                         extra_waiters, seed):
    """Producers put (with backpressure) at random times; consumers take batches until close."""
    batch = min(batch, capacity) if capacity else batch
    with _channel(capacity=capacity) as ch:
        out, lock = [], threading.Lock()

        def produce(pid, n):
            rng = random.Random(seed * 31 + pid)
            for i in range(n):
                time.sleep(rng.uniform(0, 0.004))
                ch.put((pid, i), version=0, producer=pid, timeout=30)

        producers = [_start(produce, pid, n) for pid, n in enumerate(items)]
        takers = [_start(_consume_until_closed, ch, batch, random.Random(seed + c), out, lock)
                  for c in range(consumers)]
        _join_all(producers)
        waiters = [_start(_consume_until_closed, ch, 1, random.Random(0), out, lock) for _ in range(extra_waiters)]
        # eventually every taker blocks (queue empty, or fewer items left than a batch): close wakes them all
        _wait_for_waiters(ch, "get", consumers + extra_waiters)
        ch.close()
        _join_all(takers + waiters)
        _check_delivery(out, dict(enumerate(items)))


@pytest.mark.timeout(120)
@_PROPERTY_SETTINGS
@given(batch_size=st.integers(1, 3), max_staleness=st.integers(0, 2), producers=st.integers(1, 3),
       consumers=st.integers(1, 2), batches=st.integers(1, 4), seed=st.integers(0, 999))
def test_property_staleness_bound_with_training_consumers(ray_session, batch_size, max_staleness, producers,
                                                          consumers, batches, seed):
    """Producers admit with the last published weight version and finish out of order; consumers
    'train' after each batch and then publish a new version. Staleness never exceeds the bound."""
    with _channel(max_staleness=max_staleness, batch_size=batch_size) as ch:
        total = batches * batch_size
        state = {"claimed": 0, "published": 0}
        counts = defaultdict(int)
        out, lock = [], threading.Lock()

        def produce(pid):
            rng = random.Random(seed * 31 + pid)
            while True:
                with lock:
                    if state["claimed"] == total:
                        return
                    state["claimed"] += 1
                while True:  # re-read the weight version while admission waits
                    version = state["published"]
                    try:
                        ch.admit(version, timeout=0.05)
                        break
                    except ChannelTimeout:
                        continue
                time.sleep(rng.uniform(0, 0.006))  # generation takes a random time
                ch.put((pid, counts[pid]), version=version, producer=pid, timeout=30)
                counts[pid] += 1

        def train(envelopes):
            time.sleep(0.002)
            with lock:
                state["published"] = max(state["published"], envelopes[0].delivered_index // batch_size + 1)

        threads = [_start(produce, pid) for pid in range(producers)]
        takers = [_start(_consume_until_closed, ch, batch_size, random.Random(seed + c), out, lock, train)
                  for c in range(consumers)]
        _join_all(threads)
        ch.close()
        _join_all(takers)
        _check_delivery(out, counts)
        assert len(out) == total
        for env in out:
            assert 0 <= env.staleness <= max_staleness
            assert env.staleness == env.delivered_index // batch_size - env.version
        assert ch.stats()["max_staleness_seen"] <= max_staleness
