"""Actor (FSDP2 over 2 gloo ranks) -> rollout weight sync is bit-exact and versioned."""

import numpy as np
import pytest
import ray
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig, RolloutConfig
from rlinf.runners.batching import build_train_batch, shard_rows
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.rollout.worker import RolloutWorker

pytestmark = pytest.mark.timeout(180)

VOCAB = 20


def test_update_then_sync_gives_bit_identical_weights(cluster):
    model = ModelConfig(hidden_size=32, num_layers=2, num_heads=4)
    algo = AlgorithmConfig()
    actor = WorkerGroup(cluster, ActorWorker, "sync_actor", [0, 1], args=(ActorConfig(model=model, lr=1e-2), algo, VOCAB, 3))
    rollout = WorkerGroup(cluster, RolloutWorker, "sync_rollout", [2, 3],
                          args=(RolloutConfig(max_new_tokens=3), model, VOCAB, 2, 0, 7), init_dist=False)
    try:
        actor.call("setup").wait()
        prompts = [[5, 6, 7], [8, 9], [5, 5, 5, 5], [10]]
        out = rollout.call("generate", prompts, ranks=[0]).wait()[0]
        out["versions"] = torch.zeros(4)
        batch = build_train_batch(prompts, out, torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]),
                                  algo, pad_id=0)
        before = ray.get(actor.call("export_weights").wait()[0][0])
        metrics = actor.scatter("update", shard_rows(batch, 2)).wait()
        assert metrics[0] == metrics[1]  # averaged over the group
        refs = actor.call("export_weights").wait()[0]
        assert rollout.call("load_weights", refs, 1).wait() == [1, 1]
        full = ray.get(refs[0])
        changed = sum(not np.array_equal(before[k], full[k]) for k in full)
        assert changed > 0, "the update should change some weights"
        for per_rank in rollout.call("state_dict_numpy").wait():
            assert set(per_rank) >= set(full) - {"lm_head.weight"}
            for name, value in full.items():
                if name in per_rank:
                    assert np.array_equal(per_rank[name], value), name
    finally:
        actor.shutdown()
        rollout.shutdown()
