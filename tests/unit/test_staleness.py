"""StalenessManager and ChannelCore: hand-computed cases and a property test of the bound (no Ray)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlinf.channel import ChannelCore, StalenessManager


def _admit_until_refused(sm: StalenessManager, version: int, limit: int = 100) -> int:
    count = 0
    while count < limit and sm.try_admit(version):
        count += 1
    return count


# ---- StalenessManager: exact numbers ------------------------------------------------------------
def test_b2_s1_admits_four_then_two_more_per_consumed_batch():
    sm = StalenessManager(batch_size=2, max_staleness=1)
    assert sm.admission_limit(0) == 4
    assert _admit_until_refused(sm, 0) == 4
    for _ in range(4):
        sm.on_put(0)
    assert [sm.on_consume(0), sm.on_consume(0)] == [0, 0]
    assert sm.consumer_version == 1
    assert not sm.try_admit(0)  # a version-0 producer stays capped at 4
    assert _admit_until_refused(sm, 1) == 2  # limit (1 + 1 + 1) * 2 = 6
    assert [sm.on_consume(0), sm.on_consume(0)] == [1, 1]  # consumed at consumer version 1
    assert sm.max_staleness_seen == 1
    assert (sm.admitted, sm.consumed, sm.in_flight, sm.ready) == (6, 4, 2, 0)


def test_s0_admits_exactly_one_batch_per_version():
    sm = StalenessManager(batch_size=3, max_staleness=0)
    for version in range(3):
        assert _admit_until_refused(sm, version) == 3
        for _ in range(3):
            sm.on_put(version)
        assert [sm.on_consume(version) for _ in range(3)] == [0, 0, 0]
        assert sm.consumer_version == version + 1
    assert sm.max_staleness_seen == 0


def test_try_admit_many_is_all_or_nothing():
    sm = StalenessManager(batch_size=2, max_staleness=0)
    assert not sm.try_admit(0, 3)
    assert sm.admitted == 0
    assert sm.try_admit(0, 2)
    assert sm.in_flight_of(0) == 2


def test_out_of_order_put_cannot_overtake_older_in_flight_version():
    sm = StalenessManager(batch_size=1, max_staleness=2)
    assert sm.try_admit(0) and sm.try_admit(1)
    sm.on_put(1)  # the newer sample finishes first
    assert sm.deliverable_version() is None
    assert sm.deliverable_count() == 0
    with pytest.raises(ValueError):
        sm.on_consume(1)
    sm.on_put(0)
    assert sm.deliverable_version() == 0
    assert sm.deliverable_count() == 2
    assert sm.on_consume(0) == 0
    assert sm.on_consume(1) == 0  # consumer version 1 - version 1


def test_deliverable_count_stops_after_first_version_with_work_in_flight():
    sm = StalenessManager(batch_size=1, max_staleness=5)
    for version in (0, 1, 1, 2):
        assert sm.try_admit(version)
    sm.on_put(0)
    sm.on_put(1)
    sm.on_put(2)
    assert sm.deliverable_count() == 2  # v0 ready, v1 ready + one in flight; v2 waits
    assert sm.oldest_in_flight_version() == 1


def test_cancel_frees_a_slot_and_unadmitted_operations_fail():
    sm = StalenessManager(batch_size=2, max_staleness=0)
    assert _admit_until_refused(sm, 0) == 2
    sm.cancel(0)
    assert sm.admitted == 1
    assert sm.try_admit(0)
    with pytest.raises(ValueError):
        sm.cancel(1)
    with pytest.raises(ValueError):
        sm.on_put(1)
    with pytest.raises(ValueError):
        sm.try_admit(0, 0)
    assert sm.drop_in_flight() == 2
    assert (sm.admitted, sm.in_flight) == (0, 0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        StalenessManager(batch_size=0, max_staleness=1)
    with pytest.raises(ValueError):
        StalenessManager(batch_size=1, max_staleness=-1)


# ---- StalenessManager: property test ------------------------------------------------------------
_OPS = ["sync", "sync", "admit", "admit", "finish", "finish", "cancel", "consume", "consume"]


@settings(max_examples=300, deadline=None)
@given(batch_size=st.integers(1, 4), max_staleness=st.integers(0, 3), num_producers=st.integers(1, 4),
       data=st.data())
def test_staleness_bound_holds_under_random_interleavings(batch_size, max_staleness, num_producers, data):
    """Producers sync weights at random times, finish work out of order, sometimes cancel; the
    consumer takes what may be delivered. Staleness stays in [0, s]; delivery is oldest-version
    first; once all work is finished everything is delivered."""
    sm = StalenessManager(batch_size, max_staleness)
    versions = [0] * num_producers
    in_flight = []  # versions admitted, not put
    ready = []  # versions put, in arrival order
    delivered = 0

    def consume_one():
        nonlocal delivered
        version = sm.deliverable_version()
        outstanding = in_flight + ready
        if version is None:
            assert not ready or min(outstanding) not in ready
            return
        assert version == min(outstanding)
        ready.remove(version)
        staleness = sm.on_consume(version)
        assert staleness == delivered // batch_size - version
        assert 0 <= staleness <= max_staleness
        delivered += 1

    for _ in range(data.draw(st.integers(0, 80))):
        op = data.draw(st.sampled_from(_OPS))
        p = data.draw(st.integers(0, num_producers - 1))
        if op == "sync":
            versions[p] = sm.consumer_version
        elif op == "admit":
            if sm.try_admit(versions[p]):
                in_flight.append(versions[p])
        elif op in ("finish", "cancel") and in_flight:
            version = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            if op == "finish":
                sm.on_put(version)
                ready.append(version)
            else:
                sm.cancel(version)
        elif op == "consume":
            consume_one()
        assert sm.in_flight == len(in_flight) and sm.ready == len(ready)
        assert sm.admitted <= sm.admission_limit(max(versions))
    for version in in_flight:
        sm.on_put(version)
        ready.append(version)
    in_flight.clear()
    while ready:
        assert sm.deliverable_count() == len(ready)
        consume_one()
    assert sm.consumed == delivered
    # a producer synced to the consumer can always start work when nothing is outstanding
    assert sm.try_admit(sm.consumer_version)


# ---- ChannelCore --------------------------------------------------------------------------------
def test_core_fifo_seq_and_staleness_without_admission_control():
    core = ChannelCore(capacity=0, max_staleness=None, batch_size=2)
    core.put(["a", "b"], version=0, producer="p")
    core.put(["c"], version=0, producer="q")
    core.put(["d"], version=1, producer="p")
    got = core.take(4)
    assert [e.item for e in got] == ["a", "b", "c", "d"]
    assert [(e.producer, e.seq) for e in got] == [("p", 0), ("p", 1), ("q", 0), ("p", 2)]
    assert [e.staleness for e in got] == [0, 0, 1, 0]
    assert [e.delivered_index for e in got] == [0, 1, 2, 3]
    assert core.stats()["staleness_histogram"] == {0: 3, 1: 1}


def test_core_capacity_and_oldest_version_bypass():
    core = ChannelCore(capacity=2, max_staleness=3, batch_size=1)
    with pytest.raises(ValueError):
        core.check_put(0, 1)  # not admitted
    assert core.try_admit(0) and core.try_admit(1, 3)
    core.put([10, 11], version=1)
    assert core.available() == 0 and not core.has_room(1, 1)
    assert core.has_room(0, 1)  # consumers wait for exactly this item: never held back
    core.put([0], version=0)
    assert core.qsize() == 3 and core.available() == 3
    assert [e.item for e in core.take(3)] == [0, 10, 11]
    assert ChannelCore(capacity=2).has_room(0, 5)  # an oversized batch goes into an empty queue


def test_core_close_drops_in_flight_and_drains_in_version_order():
    core = ChannelCore(capacity=0, max_staleness=2, batch_size=1)
    assert core.try_admit(0) and core.try_admit(1)
    core.put(["late"], version=1)
    assert core.available() == 0
    core.close()
    assert core.available() == 1
    assert core.take(1)[0].item == "late"
    assert core.stats()["in_flight"] == 0
