"""GPU only (skipped without CUDA): colocated weight sync on one GPU through the resharding engine's
CUDA IPC path. The rollout's arena is a CUDA tensor whose IPC handle the actor (another process on the
same physical GPU) opens and writes; after a sync the rollout's weights are bit-identical to the actor's.
Run with `make test-gpu`."""

import numpy as np
import pytest
import ray
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig, RolloutConfig
from rlinf.config.schema import ReshardConfig
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.rollout.worker import RolloutWorker
from rlinf.workflows.batching import build_train_batch
from rlinf.workflows.weight_sync import WeightSync
from tests.gpu.gpu_workers import IpcArenaWorker

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

VOCAB = 512


def test_cuda_ipc_arena_written_by_a_colocated_process(gpu_cluster):
    """The IPC hand-off alone (no link): a worker on GPU 0 opens another worker's arena on GPU 0 with
    the engine's `_open_arena` (same device UUID) and its bytes arrive bit for bit."""
    target = WorkerGroup(gpu_cluster, IpcArenaWorker, "ipc_target", [0], init_dist=False)
    source = WorkerGroup(gpu_cluster, IpcArenaWorker, "ipc_source", [0], init_dist=False)
    try:
        nbytes = 64 * 2**20 + 3  # odd size: no alignment assumed
        handle = target.call("make_arena", nbytes).wait()[0]
        wrote = source.call("write_into", handle, 5).wait()[0]
        assert wrote["opened"], "a source on the same GPU must open the target's arena"
        assert wrote["numel"] == nbytes
        assert target.call("arena_digest").wait()[0] == wrote["digest"]
        other = dict(handle, uuid="GPU-not-this-one")
        assert source.call("write_into", other, 6).wait()[0] == {"opened": False}  # another GPU: bucketed path
        assert target.call("arena_digest").wait()[0] == wrote["digest"]  # and nothing was written
    finally:
        source.shutdown()
        target.shutdown()


def _phase(name):
    from contextlib import nullcontext

    return nullcontext()


def _train_once(actor, rollout, algo) -> None:
    prompts = [[5, 6, 7], [8, 9, 10], [11, 12], [13]]
    out = rollout.call("generate", prompts).wait()[0]
    out["versions"] = torch.zeros(len(prompts))
    batch = build_train_batch(prompts, out, torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]),
                              algo, pad_id=0)
    actor.call("update", batch).wait()


def _assert_bit_equal(actor, rollout) -> None:
    full = ray.get(actor.call("export_weights").wait()[0][0], timeout=300)
    held = rollout.call("state_dict_numpy").wait()[0]
    assert set(held) >= set(full) - {"lm_head.weight"}
    for name, value in full.items():
        if name in held:
            assert np.array_equal(held[name], np.asarray(value, dtype=np.float32)), name


def test_colocated_engine_sync_on_one_gpu_is_bit_exact(gpu_cluster):
    """Actor (FSDP2, one rank) and rollout on device 0, `WeightSync.use_engine(colocated=True)`: every
    rollout parameter equals the actor's bit for bit after each of two update + sync rounds, the weights
    changed between rounds, and the rollout reports the synced version. The sync's headers travel over
    the link's NCCL group, whose two ranks here share GPU 0; NCCL does not support two ranks of one
    communicator on one device, so a failure naming a duplicate GPU is that library limit, not flakiness."""
    model = ModelConfig(hidden_size=256, num_layers=2, num_heads=4)
    algo = AlgorithmConfig()
    actor = WorkerGroup(gpu_cluster, ActorWorker, "wsg_actor", [0],
                        args=(ActorConfig(model=model, lr=1e-2), algo, VOCAB, 3))
    rollout = WorkerGroup(gpu_cluster, RolloutWorker, "wsg_rollout", [0],
                          args=(RolloutConfig(max_new_tokens=4), model, VOCAB, 2, 0, 7), init_dist=False)
    try:
        actor.call("setup").wait()
        sync = WeightSync(actor, rollout, _phase)
        sync.use_engine(ReshardConfig(), colocated=True)
        sync.publish(0)  # the initial weights: the rollout's arena starts as zeros
        sync.load()
        _assert_bit_equal(actor, rollout)
        before = rollout.call("state_dict_numpy").wait()[0]
        for version in (1, 2):
            _train_once(actor, rollout, algo)
            sync.publish(version)
            sync.load()
            assert sync.synced_version == version
            _assert_bit_equal(actor, rollout)
            now = rollout.call("state_dict_numpy").wait()[0]
            assert any(not np.array_equal(now[k], before[k]) for k in now), "the update should change weights"
            before = now
            assert rollout.call("generate", [[5, 6, 7]]).wait()[0]["version"] == version
    finally:
        actor.shutdown()
        rollout.shutdown()
