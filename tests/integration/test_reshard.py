"""Resharding engine on virtual CPU devices: FSDP2 dp in {1, 2, 4} -> {2 full replicas, tp 2}.

Colocated (shared-memory arenas written directly by the sources) and disaggregated (bucketed,
pipelined gloo point-to-point) syncs are bit-exact per parameter, versioned, and a tp-2 forward on
the received slices reproduces the full block's logits; a target rank that dies mid-sync is
reported by name and nothing hangs.
"""

import pytest
import torch

from rlinf.reshard import wait_all
from rlinf.scheduler import WorkerDiedError, WorkerGroup
from tests.integration.reshard_workers import ReshardSourceWorker, ReshardTargetWorker, block_forward

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

LAYOUTS = {"rep2": (2, 1), "tp2": (1, 2)}
VOCAB, HEAD_DIM = 37, 8


@pytest.fixture(scope="module")
def groups(cluster):
    made = {}
    try:
        made["tgt"] = WorkerGroup(cluster, ReshardTargetWorker, "rs_tgt", [2, 3])
        for dp, devices in ((1, [0]), (2, [0, 1]), (4, [0, 1, 2, 3])):
            made[dp] = WorkerGroup(cluster, ReshardSourceWorker, f"rs_src{dp}", devices, args=(dp,))
            made[dp].call("setup").wait()
            made[dp].link(made["tgt"])
        yield made
    finally:
        for g in made.values():
            g.shutdown()


def _slice(full, plan, name, dst):
    return full[name][tuple(slice(lo, hi) for lo, hi in plan.dst_box(name, dst))]


def _setup(src, tgt, key, layout, colocated, bucket_mb):
    plan = src.call("make_source", key, tgt.name, *LAYOUTS[layout], bucket_mb).wait()[0]
    handles = tgt.call("make_target", key, plan, src.name, colocated, bucket_mb).wait()
    direct = src.call("attach", key, handles).wait()
    return plan, direct


@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
@pytest.mark.parametrize("layout", ["rep2", "tp2"])
@pytest.mark.parametrize("dp", [1, 2, 4])
def test_sync_is_bit_exact_and_versioned(groups, dp, layout, mode):
    src, tgt = groups[dp], groups["tgt"]
    key = f"{dp}-{layout}-{mode}"
    plan, direct = _setup(src, tgt, key, layout, mode == "colocated", bucket_mb=0.002)  # ~2 KB buckets
    # colocated: every source writes straight into the shared-memory arenas of its targets
    assert direct == [plan.targets_of(r) if mode == "colocated" else [] for r in range(dp)]
    for version in (1, 2):
        if version == 2:
            src.call("perturb", 0.1).wait()
        sent, got = wait_all([src.call("send", key, version), tgt.call("recv", key, version)])
        assert sent == [version] * dp and got == [version, version]
        full = src.call("full_state").wait()[0]
        for dst, tensors in enumerate(tgt.call("tensors", key).wait()):
            assert set(tensors) == set(full)
            for name, value in tensors.items():
                assert torch.equal(value, _slice(full, plan, name, dst)), (key, version, name, dst)
    if layout == "tp2":
        ids = torch.tensor([3, 36, 0, 17, 33, 8])
        expect = block_forward(full, ids, HEAD_DIM, VOCAB)
        for logits in tgt.call("tp_forward", key, ids, HEAD_DIM, VOCAB).wait():
            assert logits.shape == (6, VOCAB)
            torch.testing.assert_close(logits, expect, rtol=1e-5, atol=1e-5)
    tgt.call("close", key).wait()


def test_version_must_increase(groups):
    src, tgt = groups[1], groups["tgt"]
    _setup(src, tgt, "ver", "rep2", False, bucket_mb=1.0)
    # Versions start at -1 (nothing sent); rlinf's initial weights are version 0.
    assert wait_all([src.call("send", "ver"), tgt.call("recv", "ver")]) == [[0], [0, 0]]  # auto-increment
    assert wait_all([src.call("send", "ver"), tgt.call("recv", "ver", 1)]) == [[1], [1, 1]]
    with pytest.raises(Exception, match="must increase"):
        src.call("send", "ver", 1).wait()


def test_target_dying_mid_sync_is_reported(cluster, groups):
    src = groups[2]
    dying = WorkerGroup(cluster, ReshardTargetWorker, "rs_dying", [2, 3])
    try:
        src.link(dying)
        plan = src.call("make_source", "die", "rs_dying", 2, 1, 0.001, 10.0).wait()[0]
        dying.call("make_target", "die", plan, src.name, False, 0.001, 10.0).wait()
        # The death is what is reported (WorkerDiedError naming the rank), not a timeout of the wait
        # (WorkerTimeoutError, which would mean something hung until the deadline).
        with pytest.raises(WorkerDiedError, match=r"rs_dying\[rank 1\]"):
            wait_all([src.call("send", "die", 1), dying.call("recv", "die", 1, 0, ranks=[1]),
                      dying.call("recv", "die", 1, ranks=[0])], timeout=60)
    finally:
        dying.shutdown(timeout=20)
    # the source ranks are free again: their sends ended (failed or timed out after reshard.timeout_s)
    # before this call, which Ray runs after them on each rank
    assert src.call("full_state").wait(timeout=30)[0]


@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
def test_staged_target_switches_weights_only_in_apply(cluster, mode):
    """Staged targets (async schedule): a sync is delivered with no call on the target side and leaves
    the weights the model reads untouched; `apply` switches them to exactly the published version."""
    # Own groups: a staged target's receiver thread serves its link until the process ends.
    src = WorkerGroup(cluster, ReshardSourceWorker, f"st_src_{mode}", [0, 1], args=(2,))
    tgt = WorkerGroup(cluster, ReshardTargetWorker, f"st_tgt_{mode}", [2, 3])
    try:
        src.call("setup").wait()
        src.link(tgt)
        plan = src.call("make_source", "s", tgt.name, 2, 1, 0.002).wait()[0]
        handles = tgt.call("make_target", "s", plan, src.name, mode == "colocated", 0.002, staged=True).wait()
        src.call("attach", "s", handles).wait()
        before = tgt.call("tensors", "s").wait()
        assert src.call("send", "s", 1).wait() == [1, 1]  # delivered while the targets run nothing
        for held, was in zip(tgt.call("tensors", "s").wait(), before):
            assert all(torch.equal(held[n], was[n]) for n in was)
        assert tgt.call("apply", "s", 1).wait() == [1, 1]
        full = src.call("full_state").wait()[0]
        for dst, tensors in enumerate(tgt.call("tensors", "s").wait()):
            assert all(torch.equal(v, _slice(full, plan, n, dst)) for n, v in tensors.items())
        src.call("perturb", 0.1).wait()
        assert src.call("send", "s", 2).wait() == [2, 2]
        assert tgt.call("apply", "s", 2).wait() == [2, 2]  # waits until all of version 2 has arrived
        full = src.call("full_state").wait()[0]
        for dst, tensors in enumerate(tgt.call("tensors", "s").wait()):
            assert all(torch.equal(v, _slice(full, plan, n, dst)) for n, v in tensors.items())
        with pytest.raises(Exception, match="staging holds version 2"):  # asked for another version
            tgt.call("apply", "s", 1, ranks=[0]).wait()
        with pytest.raises(Exception, match="version 3 not received"):
            tgt.call("apply", "s", 3, 0.5, ranks=[0]).wait()
    finally:
        src.shutdown()
        tgt.shutdown()
