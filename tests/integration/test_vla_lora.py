"""LoRA tiny VLA (actor.model.lora_rank=4), actor on 2 data-parallel gloo ranks -> 2 policy rollout
replicas: syncs move only the trainable tensors, yet the rollout policy stays bit-exact to the actor's
(the frozen bases are built identically), and the frozen base never moves."""

from contextlib import nullcontext

import numpy as np
import pytest
import ray

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig
from rlinf.config.schema import ReshardConfig
from rlinf.workflows.weight_sync import WeightSync
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.embodied_actor import EmbodiedActorWorker
from rlinf.workers.rollout.policy_worker import PolicyRolloutWorker

pytestmark = pytest.mark.timeout(240)

SPEC = {"image_shape": (32, 32, 3), "state_dim": 5, "obs_dim": 5, "action_dim": 3, "discrete": False,
        "obs_shape": None, "action_low": [-1.0] * 3, "action_high": [1.0] * 3}
C, D = 2, 3


def _shard(rng, n=2, T=4):
    """A rank's batch of n envs x T decisions of C-action chunks, with image observations."""
    obs = {"image": rng.integers(0, 256, (n, T, 32, 32, 3), dtype=np.uint8),
           "state": rng.normal(size=(n, T, 5)).astype(np.float32),
           "instruction": np.array([["pick the cube"] * T, ["push it"] * T] * (n // 2))}
    return {"obs": obs, "actions": rng.uniform(-1, 1, (n, T, C, D)).astype(np.float32),
            "logprobs": np.full((n, T, C), -16.0, np.float32), "values": rng.normal(size=(n, T, C)).astype(np.float32),
            "rewards": rng.normal(size=(n, T, C)).astype(np.float32), "dones": np.zeros((n, T, C), bool),
            "final_values": np.zeros((n, T, C), np.float32), "bootstrap_values": np.zeros((n, C), np.float32)}


def _phase(name):
    return nullcontext()


@pytest.mark.parametrize("transport", ["engine", "engine_colocated", "object_store"])
def test_lora_vla_syncs_trainable_tensors_bit_exact_and_base_stays_frozen(cluster, transport):
    model = ModelConfig(kind="vla", hidden_size=32, num_layers=1, num_heads=2, vision_hidden_size=32, vision_layers=1,
                        patch_size=16, instruction_tokens=8, action_head="chunk", action_chunk=C, lora_rank=4,
                        lora_alpha=8.0)
    actor_cfg = ActorConfig(model=model, lr=1e-2, global_batch_size=4)
    algo = AlgorithmConfig(adv_estimator="gae", reward_level="chunk", logprob_level="action", update_epochs=1)
    actor = WorkerGroup(cluster, EmbodiedActorWorker, f"lora_actor_{transport}", [0, 1],
                        args=(actor_cfg, algo, SPEC, 3, 10))
    rollout = WorkerGroup(cluster, PolicyRolloutWorker, f"lora_rollout_{transport}",
                          [0, 1] if transport == "engine_colocated" else [2, 3], args=(model, SPEC, 3),
                          init_dist=False)
    try:
        sync = WeightSync(actor, rollout, _phase)
        if transport != "object_store":
            sync.use_engine(ReshardConfig(), colocated=transport == "engine_colocated")
        initial = actor.call("state_dict_numpy", ranks=[0]).wait()[0]
        frozen = [k for k in initial if "lora_" not in k and k.split(".")[0] not in
                  ("projector", "proprio", "action_queries", "value_head")]
        assert frozen and len(frozen) < len(initial)
        rng = np.random.default_rng(0)
        for version in (1, 2, 3):
            actor.scatter("update", [_shard(rng), _shard(rng)]).wait()
            sync.publish(version)
            if transport == "object_store":  # only the trainable tensors travel
                sent = ray.get(sync._refs[0])
                assert set(sent) == set(initial) - set(frozen)
            sync.load()
            assert sync.synced_version == version
            replicas = actor.call("state_dict_numpy").wait()
            want = replicas[0]
            assert all(np.array_equal(replicas[1][k], want[k]) for k in want)  # dp replicas identical
            for held in rollout.call("state_dict_numpy").wait():
                assert set(held) == set(want)
                bad = [k for k in want if not np.array_equal(held[k], want[k])]
                assert not bad, (version, bad[:3])
        assert all(np.array_equal(want[k], initial[k]) for k in frozen)  # the base did not move
        assert any(not np.array_equal(want[k], initial[k]) for k in want if "lora_B" in k)  # the adapters did
        obs = _shard(np.random.default_rng(1), n=2, T=1)["obs"]
        batch = {"obs": {k: v[:, 0] for k, v in obs.items()}, "final_obs": None, "cut": None}
        outs = rollout.call("act", batch, greedy=True).wait()
        assert [o["version"] for o in outs] == [3, 3]
        assert np.array_equal(outs[0]["actions"], outs[1]["actions"])
    finally:
        actor.shutdown()
        rollout.shutdown()
