"""`wait_first`: the controller's wait on whichever of several group calls finishes first (the hybrid
pipeline's collection loop handles act and step calls in completion order)."""

import pytest

from rlinf.scheduler import WorkerError, WorkerGroup, WorkerTimeoutError, wait_first
from tests.integration.workers_for_tests import EchoWorker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def groups(cluster):
    a = WorkerGroup(cluster, EchoWorker, "wf_a", devices=[0, 1], init_dist=False)
    b = WorkerGroup(cluster, EchoWorker, "wf_b", devices=[2, 3], init_dist=False)
    yield a, b
    a.shutdown()
    b.shutdown()


def test_returns_the_handle_whose_ranks_all_returned(groups):
    a, b = groups
    # one rank of the first handle returns at once, the other late: the first handle is not complete
    slow = a.scatter("sleep", [0.0, 3.0])
    fast = b.call("sleep", 0.2)
    assert wait_first([slow, fast]) == 1
    assert fast.wait() == [0.2, 0.2]
    assert wait_first([slow]) == 0 and slow.wait() == [0.0, 3.0]
    assert wait_first([slow, fast]) == 0  # both complete: list order (oldest first)


def test_a_failed_call_counts_as_returned_and_its_wait_raises(groups):
    a, b = groups
    slow = a.call("sleep", 3.0)
    bad = b.call("fail", "boom")
    assert wait_first([slow, bad]) == 1
    with pytest.raises(WorkerError, match="boom"):
        bad.wait()
    slow.wait()


def test_times_out_naming_the_first_handle(groups):
    a, _ = groups
    slow = a.call("sleep", 2.0)
    with pytest.raises(WorkerTimeoutError):
        wait_first([slow], timeout=0.2)
    slow.wait()
    with pytest.raises(ValueError):
        wait_first([])
