"""No silent drops in the channel core (no Ray): every item offered to a put is consumed, queued, or
counted in `dropped[<why>]`, under random sequences of admit / put / get / close / cancelled gets
(taken and handed back) / discard, for many seeds and with and without staleness control."""

import logging
import random

import pytest

from rlinf.channel import ChannelClosed, ChannelCore


def _invariant(core: ChannelCore) -> None:
    stats = core.stats()
    assert stats["produced"] == stats["consumed"] + stats["qsize"] + sum(stats["dropped"].values()), stats
    assert core.produced == core.consumed + core.qsize() + sum(core.dropped.values())


def _run(seed: int, staleness: bool) -> dict:
    rng = random.Random(seed)
    capacity = rng.choice([0, 0, 2, 4])
    batch_size = rng.randint(1, 3)
    core = ChannelCore(capacity, rng.randint(0, 2) if staleness else None, batch_size)
    pending = []  # (version, n): batches being produced (admitted, when staleness control is on)
    delivered = []  # every item a consumer received, in order
    next_item = 0
    for _ in range(rng.randint(5, 60)):
        op = rng.choices(["admit", "put", "get", "cancelled_get", "close", "discard"],
                         weights=[5, 5, 6, 3, 1, 0.3])[0]
        if op == "admit":
            version, n = max(0, core.consumer_version() - rng.randint(0, 1)), rng.randint(1, 3)
            if core.closed or core.try_admit(version, n):
                pending.append((version, n))
        elif op == "put" and pending:
            version, n = pending[rng.randrange(len(pending))]
            if not core.has_room(version, n):
                continue
            pending.remove((version, n))
            items = list(range(next_item, next_item + n))
            next_item += n
            try:
                core.put(items, version, producer=rng.randint(0, 1))
            except ChannelClosed:  # refused, and counted as put_after_close
                assert core.closed
        elif op in ("get", "cancelled_get"):
            n = rng.randint(1, capacity or 4)
            try:
                taken = core.get(n)
            except ChannelClosed:
                assert core.closed and core.qsize() == 0
                continue
            if taken is None:
                continue
            assert len(taken) == n or core.closed  # short only after close (and then counted)
            if op == "cancelled_get":  # the answer reached a caller that was cancelled: handed back
                core.restore(taken)
                _invariant(core)
                again = core.get(len(taken))  # delivered next, in the same order
                assert [e.item for e in again] == [e.item for e in taken]
                taken = again
            delivered.extend(e.item for e in taken)
        elif op == "close":
            core.close()  # producers still working will find it closed when they put
        elif op == "discard":
            core.discard("unconsumed_at_stop")
        _invariant(core)
    core.close()  # the end of a run: producers still working finish and put, then what is left is counted
    for version, n in pending:
        with pytest.raises(ChannelClosed):
            core.put(list(range(next_item, next_item + n)), version)
        next_item += n
    core.discard("unconsumed_at_stop")
    _invariant(core)
    stats = core.stats()
    assert stats["qsize"] == 0
    assert stats["produced"] == next_item == len(delivered) + sum(stats["dropped"].values())
    assert len(set(delivered)) == len(delivered)  # nothing delivered twice
    return stats


@pytest.mark.parametrize("staleness", [False, True])
def test_property_produced_equals_consumed_plus_counted_drops(staleness):
    reasons = set()
    for seed in range(400):
        reasons |= set(_run(seed, staleness)["dropped"])
    assert reasons == {"put_after_close", "unconsumed_at_stop"}  # the sequences reached every kind of drop


def test_put_after_close_is_counted_logged_and_raises(caplog):
    core = ChannelCore()
    core.put(["a"], 0)
    core.close()
    with caplog.at_level(logging.WARNING, logger="rlinf.channel.core"):
        with pytest.raises(ChannelClosed):
            core.put(["b", "c"], 0)
    assert core.dropped == {"put_after_close": 2}
    assert "put_after_close" in caplog.text
    assert (core.produced, core.consumed, core.qsize()) == (3, 0, 1)


def test_put_after_close_with_staleness_is_counted_not_a_value_error():
    core = ChannelCore(max_staleness=0, batch_size=1)
    assert core.try_admit(0)
    core.close()  # drops the in-flight admission
    core.check_put(0, 1)  # nothing to validate on a closed channel: the put is refused and counted
    with pytest.raises(ChannelClosed):
        core.put(["late"], 0)
    assert core.dropped == {"put_after_close": 1}


def test_get_on_closed_channel_returns_the_rest_counted_then_raises(caplog):
    core = ChannelCore()
    core.put([1, 2, 3], 0)
    assert core.get(5) is None  # open: wait for more
    core.close()
    with caplog.at_level(logging.WARNING, logger="rlinf.channel.core"):
        assert [e.item for e in core.get(5)] == [1, 2, 3]
    assert core.stats()["short_gets"] == 1 and "returns the last 3" in caplog.text
    with pytest.raises(ChannelClosed):
        core.get(1)


def test_discard_counts_queued_items_under_its_reason():
    core = ChannelCore(max_staleness=1, batch_size=2)
    assert core.try_admit(0, 3)
    core.put(["a", "b", "c"], 0)
    assert [e.item for e in core.get(1)] == ["a"]
    assert core.discard("unconsumed_at_stop") == 2
    assert core.dropped == {"unconsumed_at_stop": 2} and core.closed and core.qsize() == 0
    assert core.staleness.ready == 0


def test_restore_puts_items_back_at_the_head_and_undoes_consumption():
    core = ChannelCore(max_staleness=1, batch_size=2)
    assert core.try_admit(0, 3)
    core.put(["a", "b", "c"], 0)
    taken = core.get(2)
    assert core.consumer_version() == 1
    core.restore(taken)
    assert core.consumer_version() == 0 and core.consumed == 0 and core.qsize() == 3
    assert core.stats()["staleness_histogram"] == {} and core.stats()["restored"] == 2
    again = core.get(3)
    assert [e.item for e in again] == ["a", "b", "c"]
    assert [e.staleness for e in again] == [0, 0, 1]
    assert [e.delivered_index for e in again] == [2, 3, 4]  # delivery indices are never reused
