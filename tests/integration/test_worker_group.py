"""WorkerGroup over real Ray actors and real torch.distributed (gloo) process groups."""

import asyncio
import os
import signal
import pytest
import ray
import torch

from rlinf.scheduler import WorkerDiedError, WorkerError, WorkerGroup, WorkerTimeoutError
from tests.integration.workers_for_tests import BrokenInit, EchoWorker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pair(cluster):
    g = WorkerGroup(cluster, EchoWorker, "echo", devices=[0, 1], args=(10,))
    yield g
    g.shutdown()


def test_call_all_ranks_scatter_and_chosen_ranks(pair):
    h = pair.call("add", 5)
    assert h.wait() == [15, 16]
    assert len(h.spans) == 2 and h.durations == [end - start for start, end in h.spans]  # one timed span per rank
    assert pair.scatter("add", [1, 2]).wait() == [11, 13]
    assert pair.call("add", 0, ranks=[1]).wait() == [11]
    assert pair.add(1).wait() == [11, 12]  # attribute sugar
    with pytest.raises(ValueError, match="2 shards for 1 ranks"):
        pair.scatter("add", [1, 2], ranks=[0])
    with pytest.raises(AttributeError, match="no method 'nope'"):
        pair.call("nope")


def test_identity_devices_and_thread_cap(pair):
    ids = pair.call("identity").wait()
    assert [i["rank"] for i in ids] == [0, 1] and all(i["world"] == 2 for i in ids)
    assert [i["device"] for i in ids] == [0, 1]
    assert all(i["threads"] == 1 and i["omp"] == "1" for i in ids)
    assert ids[0]["pid"] != ids[1]["pid"]


def test_group_has_its_own_process_group(cluster, pair):
    assert pair.call("all_reduce_rank").wait() == [(3.0, 2), (3.0, 2)]  # 1 + 2
    trio = WorkerGroup(cluster, EchoWorker, "trio", devices=[1, 2, 3])
    try:
        assert trio.call("all_reduce_rank").wait() == [(6.0, 3)] * 3  # 1 + 2 + 3, independent of `pair`
    finally:
        trio.shutdown()


def test_async_await(pair):
    async def main():
        return await pair.call("add", 1)

    assert asyncio.run(main()) == [11, 12]


def test_remote_exception_names_group_rank_method_and_traceback(pair):
    with pytest.raises(WorkerError) as err:
        pair.call("fail", "bad input 42", ranks=[1]).wait()
    msg = str(err.value)
    assert err.value.group == "echo" and err.value.rank == 1 and err.value.method == "fail"
    assert "echo[rank 1].fail failed" in msg and "ValueError: bad input 42" in msg
    assert "remote traceback" in msg
    assert pair.call("add", 0).wait() == [10, 11]  # the group survives a raised exception


def test_failed_constructor_is_reported(cluster):
    with pytest.raises(WorkerError) as err:
        WorkerGroup(cluster, BrokenInit, "broken", devices=[0])
    assert "broken[rank 0]" in str(err.value) and "cannot build model" in str(err.value)


def test_wait_timeout(pair):
    h = pair.call("sleep", 3, ranks=[0])
    with pytest.raises(WorkerTimeoutError, match=r"echo ranks \[0\] did not finish sleep"):
        h.wait(timeout=0.5)
    assert h.wait(timeout=30) == [3]


def test_async_wait_timeout(pair):
    h = pair.call("sleep", 3, ranks=[0])

    async def main():
        return await h._wait_async(0.5)

    with pytest.raises(WorkerTimeoutError, match=r"echo ranks \[0\] did not finish sleep"):
        asyncio.run(main())
    assert h.wait(timeout=30) == [3]


def test_cross_group_send_recv_is_bit_exact(cluster, pair):
    other = WorkerGroup(cluster, EchoWorker, "peer", devices=[2, 3])
    try:
        pair.link(other)
        hs = pair.call("send_to", "peer", 10)
        hr = other.call("recv_from", "echo")
        got = hr.wait()
        assert hs.wait() == [10, 10]
        for rank, (t, flags) in enumerate(got):
            expected = torch.arange(10, dtype=torch.float64).reshape(-1, 2) * (rank + 1)
            assert t.dtype == torch.float64 and torch.equal(t, expected)
            assert torch.equal(flags, torch.tensor([True, False]))
        # Broadcast over the link from link-rank 0 (echo rank 0) reaches every member.
        h1, h2 = pair.call("bcast", "peer", 7), other.call("bcast", "echo", -1)
        assert h1.wait() == h2.wait() == [[7.0] * 4] * 2
    finally:
        other.shutdown()


def test_sigkill_surfaces_as_named_error_quickly(cluster):
    g = WorkerGroup(cluster, EchoWorker, "victim", devices=[0, 1])
    pid = g.call("identity").wait()[1]["pid"]
    h = g.call("sleep", 20)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDiedError) as err:
        h.wait(timeout=60)
    # Order of events, not seconds: the death surfaced while rank 0 was still sleeping (the wait did
    # not run into rank 0's result, nor into its own timeout).
    ready, _ = ray.wait([h.refs[0]], timeout=0)
    assert not ready
    assert err.value.group == "victim" and err.value.rank == 1
    assert "victim[rank 1] died during sleep" in str(err.value)
    g.kill()


def test_pop_events_give_per_rank_phases(pair):
    pair.pop_events()
    pair.call("sleep", 0.05).wait()
    events = pair.pop_events()
    assert sorted(e["rank"] for e in events) == [0, 1]
    assert all(e["name"] == "sleep" and e["group"] == "echo" and e["start"] <= e["end"] for e in events)
    assert pair.pop_events() == []  # popped: a second call returns only newer events


def test_peer_results_pass_from_group_to_group_without_the_controller(cluster, pair):
    """Rank i of one group reads rank i's result of another group's call, issued before that result exists;
    the reader's timed span starts once the result has arrived."""
    other = WorkerGroup(cluster, EchoWorker, "echo2", devices=[0, 1], args=(100,))
    try:
        pair.pop_events()
        slow = pair.call("sleep", 0.3)  # results 0.3 on both ranks
        added = other.call_per_rank("add", [(r,) for r in slow.peer_results()])  # 100 + 0.3 + rank
        assert added.wait() == [100.3, 101.3] and slow.wait() == [0.3, 0.3]
        slow_end = min(end for _, end in slow.spans)
        assert all(start >= slow_end for start, _ in added.spans)
        failing = pair.call("fail", "no result")
        with pytest.raises(WorkerError, match="no result"):  # the producer's error reaches the reader's caller
            other.call_per_rank("add", [(r,) for r in failing.peer_results()]).wait()
        with pytest.raises(ValueError, match="1 argument tuples for 2 ranks"):
            other.call_per_rank("add", [(1,)])
    finally:
        other.shutdown()
