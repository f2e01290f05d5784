"""Actor (FSDP2 over 2 gloo ranks) -> rollout weight sync is bit-exact and versioned; through the
resharding engine, staged syncs (async schedule) never mix versions inside one request, and the
embodied policy's weights arrive bit-exact."""

from contextlib import nullcontext

import numpy as np
import pytest
import ray
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig, RolloutConfig
from rlinf.config.schema import ReshardConfig
from rlinf.workflows.batching import build_train_batch, shard_rows
from rlinf.models.policy import state_spec
from rlinf.workflows.weight_sync import WeightSync
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.rollout.policy_worker import PolicyRolloutWorker
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


def _phase(name):
    return nullcontext()


def _lm_groups(cluster, tag, rollout_devices):
    model = ModelConfig(hidden_size=32, num_layers=2, num_heads=4)
    algo = AlgorithmConfig()
    actor = WorkerGroup(cluster, ActorWorker, f"st_actor_{tag}", [0, 1],
                        args=(ActorConfig(model=model, lr=5e-2), algo, VOCAB, 3))
    rollout = WorkerGroup(cluster, RolloutWorker, f"st_rollout_{tag}", rollout_devices,
                          args=(RolloutConfig(max_new_tokens=48), model, VOCAB, 2, 0, 7), init_dist=False)
    return actor, rollout, algo


@pytest.mark.parametrize("colocated", [False, True])
def test_staged_sync_during_inflight_generation_never_mixes_versions(cluster, colocated):
    """Async schedule: weights published while a generate call runs land in the staging arena; the
    running request finishes on the old version, the next one runs on the new version only."""
    actor, rollout, algo = _lm_groups(cluster, int(colocated), [0, 1] if colocated else [2, 3])
    try:
        actor.call("setup").wait()
        sync = WeightSync(actor, rollout, _phase)
        sync.use_engine(ReshardConfig(bucket_mb=0.01), colocated=colocated, staged=True)
        sync.publish(0)
        sync.load()
        prompts = [[5, 6, 7], [8, 9], [5, 5, 5, 5], [10]] * 8
        ref0 = rollout.call("generate", prompts, seed=11).wait()  # every request entirely on version 0
        v0 = rollout.call("state_dict_numpy").wait()
        out = ref0[0]
        out["versions"] = torch.zeros(len(prompts))
        scores = torch.tensor([1.0, 0.0] * (len(prompts) // 2))
        batch = build_train_batch(prompts, out, scores, torch.arange(len(prompts)) // 4, algo, pad_id=0)
        actor.scatter("update", shard_rows(batch, 2)).wait()
        inflight = rollout.call("generate", prompts, seed=11)
        sync.publish(1)  # delivered while the generate call may still run
        during = inflight.wait()
        for got, ref in zip(during, ref0):  # no token of the in-flight request saw version 1
            assert got["version"] == 0
            assert torch.equal(got["responses"], ref["responses"]) and torch.equal(got["logprobs"], ref["logprobs"])
        for held, before in zip(rollout.call("state_dict_numpy").wait(), v0):  # publish leaves live weights alone
            assert all(np.array_equal(held[k], before[k]) for k in before)
        sync.load()  # switch between requests
        full = ray.get(actor.call("export_weights").wait()[0][0])
        for held in rollout.call("state_dict_numpy").wait():
            assert all(np.array_equal(held[k], np.asarray(full[k], dtype=np.float32)) for k in full if k in held)
        after = rollout.call("generate", prompts, seed=11).wait()
        assert all(a["version"] == 1 for a in after)
        assert not torch.equal(after[0]["logprobs"], ref0[0]["logprobs"])
    finally:
        actor.shutdown()
        rollout.shutdown()


@pytest.mark.parametrize("colocated,staged", [(False, False), (True, False), (False, True)])
def test_embodied_policy_engine_sync_is_bit_exact(cluster, colocated, staged):
    """EmbodiedActorWorker (2 identical dp replicas) -> PolicyRolloutWorker x 2 through the engine."""
    model = ModelConfig(kind="mlp", hidden_size=16, num_layers=2)
    actor_cfg = ActorConfig(model=model, lr=1e-2, global_batch_size=32)
    algo = AlgorithmConfig(adv_estimator="gae", gamma=0.99, lam=0.95, update_epochs=2)
    tag = f"{int(colocated)}{int(staged)}"
    actor = WorkerGroup(cluster, EmbodiedActorWorker, f"ee_actor_{tag}", [0, 1], args=(actor_cfg, algo, state_spec(3, 2, False), 3, 10))
    rollout = WorkerGroup(cluster, PolicyRolloutWorker, f"ee_rollout_{tag}", [0, 1] if colocated else [2, 3],
                          args=(model, state_spec(3, 2, False), 5), init_dist=False)
    try:
        sync = WeightSync(actor, rollout, _phase)
        sync.use_engine(ReshardConfig(), colocated=colocated, staged=staged)
        rng = np.random.default_rng(0)
        for version in (1, 2):
            shards = [{"obs": rng.normal(size=(4, 8, 3)).astype(np.float32),
                       "actions": rng.normal(size=(4, 8, 2)).astype(np.float32),
                       "logprobs": np.full((4, 8), -1.5, np.float32), "values": np.zeros((4, 8), np.float32),
                       "rewards": rng.normal(size=(4, 8)).astype(np.float32), "dones": np.zeros((4, 8), bool),
                       "final_values": np.zeros((4, 8), np.float32), "bootstrap_values": np.zeros(4, np.float32)}
                      for _ in range(2)]
            update = actor.scatter("update", shards)
            # version 2 (direct engine): the transfer is issued while the update runs, queued behind it
            if version == 2:
                assert sync.load_after_update(version) == (not staged)
            update.wait()
            sync.publish(version)
            # version 2: the load is only issued; a rollout call issued after it runs on the new weights
            sync.load(settle=version == 1)
            held_now = rollout.call("state_dict_numpy")
            sync.settle()
            assert sync.synced_version == version
            want = actor.call("state_dict_numpy", ranks=[0]).wait()[0]
            for held in held_now.wait():
                assert set(held) == set(want) and all(np.array_equal(held[k], want[k]) for k in want), version
            out = rollout.call("act", {"obs": np.zeros((2, 3), np.float32), "final_obs": None, "cut": None}).wait()
            assert [o["version"] for o in out] == [version, version]
    finally:
        actor.shutdown()
        rollout.shutdown()
