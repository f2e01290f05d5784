"""GPU only (skipped without CUDA): an offloaded actor frees >= 90% of its device memory and comes back
bit-exact. Run with `make test-gpu` on a GPU host."""

import pytest
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ClusterConfig, ModelConfig, RolloutConfig
from rlinf.scheduler import Cluster, WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workflows.batching import build_train_batch
from rlinf.workers.rollout.worker import RolloutWorker

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

VOCAB = 512


def test_offload_frees_device_memory_and_onload_is_bit_exact():
    cluster = Cluster(ClusterConfig(num_devices=1, device_type="cuda", wait_timeout_s=300))
    model = ModelConfig(hidden_size=512, num_layers=4, num_heads=8)
    algo = AlgorithmConfig()
    actor = WorkerGroup(cluster, ActorWorker, "gpu_actor", [0], args=(ActorConfig(model=model), algo, VOCAB, 3))
    rollout = WorkerGroup(cluster, RolloutWorker, "gpu_rollout", [0],
                          args=(RolloutConfig(max_new_tokens=4), model, VOCAB, 2, 0, 7), init_dist=False)
    try:
        actor.call("setup").wait()
        prompts = [[5, 6, 7], [8, 9, 10]]
        out = rollout.call("generate", prompts).wait()[0]
        out["versions"] = torch.zeros(2)
        batch = build_train_batch(prompts, out, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), algo, pad_id=0)
        actor.call("update", batch).wait()  # the optimizer now holds its state on the device
        before = actor.call("device_memory_bytes").wait()[0]
        digest = actor.call("state_digest").wait()[0]
        actor.call("offload").wait()
        offloaded = actor.call("device_memory_bytes").wait()[0]
        actor.call("onload").wait()
        assert offloaded <= 0.1 * before, (before, offloaded)
        assert actor.call("state_digest").wait()[0] == digest
    finally:
        actor.shutdown()
        rollout.shutdown()
        cluster.shutdown()
