"""GPU only (skipped without CUDA): WorkerGroups on CUDA devices get the NCCL backend, and NCCL
collectives and cross-group link transfers are exact. NCCL allows one rank per GPU in a communicator, so
the multi-rank checks need >= 2 GPUs; the one-rank checks run on a single GPU. Run with `make test-gpu`."""

import pytest
import torch

from rlinf.scheduler import WorkerGroup
from tests.gpu.gpu_workers import CudaEchoWorker, need_gpus

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

N = 1 << 20  # 1M float64 per rank: integer values, so every sum is exact


def test_one_rank_group_is_nccl_on_its_gpu(gpu_cluster):
    """Cluster.backend is nccl on CUDA; a one-rank group's rank sits on cuda:0 with only its GPU visible,
    and a one-rank all-reduce / broadcast leaves the data unchanged."""
    assert gpu_cluster.device_type == "cuda" and gpu_cluster.backend == "nccl"
    group = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_one", [0])
    try:
        info = group.call("info").wait()[0]
        assert info["backend"] == "nccl" and info["device"] == "cuda:0"
        assert info["visible"] == str(gpu_cluster.device(0).local_index)
        out = group.call("all_reduce_exact", N).wait()[0]
        assert torch.equal(out, torch.arange(N, dtype=torch.float64))
        assert torch.equal(group.call("broadcast_from", 0, 16).wait()[0], torch.full((16,), 7.0))
    finally:
        group.shutdown()


@need_gpus(2)
def test_two_rank_all_reduce_and_broadcast_are_exact(gpu_cluster):
    """Two ranks on two GPUs (distinct device UUIDs): all-reduce of arange * (rank + 1) is exactly
    arange * 3 on both ranks; a broadcast from rank 1 reaches rank 0 unchanged."""
    group = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_two", [0, 1])
    try:
        infos = group.call("info").wait()
        assert [i["backend"] for i in infos] == ["nccl", "nccl"]
        assert infos[0]["uuid"] != infos[1]["uuid"]
        want = torch.arange(N, dtype=torch.float64) * 3
        for out in group.call("all_reduce_exact", N).wait():
            assert torch.equal(out, want)
        for out in group.call("broadcast_from", 1, 16).wait():
            assert torch.equal(out, torch.full((16,), 8.0))
    finally:
        group.shutdown()


@need_gpus(4)
def test_groups_keep_separate_communicators(gpu_cluster):
    """Two 2-rank groups on disjoint GPUs reduce independently: (1 + 2) in each, not (1 + 2) * 2."""
    a = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_a", [0, 1])
    b = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_b", [2, 3])
    try:
        ha, hb = a.call("all_reduce_exact", 1024), b.call("all_reduce_exact", 1024)
        want = torch.arange(1024, dtype=torch.float64) * 3
        assert all(torch.equal(out, want) for out in ha.wait() + hb.wait())
    finally:
        a.shutdown()
        b.shutdown()


@need_gpus(2)
def test_link_between_groups_on_two_gpus_is_bit_exact(gpu_cluster):
    """A link (one NCCL process group over both groups' ranks) carries a bf16 tensor from the group on
    GPU 0 to the group on GPU 1 bit for bit, landing on the receiver's GPU with its shape and dtype."""
    src = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_src", [0], init_dist=False)
    dst = WorkerGroup(gpu_cluster, CudaEchoWorker, "nccl_dst", [1], init_dist=False)
    try:
        src.link(dst)
        sent_h = src.call("send_to", dst.name, 4096)
        got = dst.call("recv_from", src.name).wait()[0]
        sent = sent_h.wait()[0]
        assert got["digest"] == sent
        assert got["device"] == "cuda:0" and got["dtype"] == "torch.bfloat16" and got["shape"] == (4096, 3)
    finally:
        src.shutdown()
        dst.shutdown()
