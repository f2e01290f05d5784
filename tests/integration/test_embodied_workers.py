"""Embodied actor (2 data-parallel gloo ranks) -> policy rollout: gradients are averaged so the
replicas stay identical, and the weight sync is bit-exact and versioned."""

import numpy as np
import pytest
import ray

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig
from rlinf.scheduler import WorkerGroup
from rlinf.models.policy import state_spec
from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker
from rlinf.workers.rollout.policy_worker import PolicyRolloutWorker

pytestmark = pytest.mark.timeout(180)


def _shard(rng, n=4, T=8):
    return {"obs": rng.normal(size=(n, T, 4)).astype(np.float32), "actions": rng.integers(0, 2, (n, T)),
            "logprobs": np.full((n, T), -0.69, np.float32), "values": rng.normal(size=(n, T)).astype(np.float32),
            "rewards": np.ones((n, T), np.float32), "dones": rng.random((n, T)) < 0.1,
            "final_values": np.zeros((n, T), np.float32), "bootstrap_values": np.zeros(n, np.float32)}


def test_dp_update_keeps_replicas_identical_and_sync_is_bit_exact(cluster):
    model = ModelConfig(kind="mlp", hidden_size=16, num_layers=2)
    actor_cfg = ActorConfig(model=model, lr=1e-2, global_batch_size=32, grad_clip=0.5)
    algo = AlgorithmConfig(adv_estimator="gae", gamma=0.99, lam=0.95, update_epochs=2, entropy_coef=0.01)
    actor = WorkerGroup(cluster, EmbodiedActorWorker, "emb_actor", [0, 1], args=(actor_cfg, algo, state_spec(4, 2, True), 3, 10))
    rollout = WorkerGroup(cluster, PolicyRolloutWorker, "emb_rollout", [2], args=(model, state_spec(4, 2, True), 5),
                          init_dist=False)
    try:
        before = actor.call("state_dict_numpy").wait()
        assert all(np.array_equal(before[0][k], before[1][k]) for k in before[0])  # same seed
        rng = np.random.default_rng(0)
        metrics = actor.scatter("update", [_shard(rng), _shard(rng)]).wait()  # different data per rank
        assert metrics[0] == metrics[1] and metrics[0]["actor/optimizer_steps"] == 2 * 2
        after = actor.call("state_dict_numpy").wait()
        for k in after[0]:
            assert np.array_equal(after[0][k], after[1][k]), k  # averaged gradients -> identical replicas
        assert any(not np.array_equal(before[0][k], after[0][k]) for k in after[0])
        refs = actor.call("export_weights").wait()[0]
        assert rollout.call("load_weights", refs, 1).wait() == [1]
        held = rollout.call("state_dict_numpy").wait()[0]
        full = ray.get(refs[0])
        assert set(held) == set(full) and all(np.array_equal(held[k], full[k]) for k in full)
        out = rollout.call("act", {"obs": np.zeros((3, 4), np.float32), "final_obs": np.ones((3, 4), np.float32),
                                   "cut": np.array([False, True, False])}).wait()[0]
        assert out["version"] == 1 and out["actions"].shape == (3,)
        assert out["final_values"][0] == 0 and out["final_values"][1] != 0
    finally:
        actor.shutdown()
        rollout.shutdown()
