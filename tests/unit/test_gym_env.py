"""GymVectorEnv semantics (same-step auto-reset, episode statistics, truncation), the unknown-id error,
the MLP actor-critic, the env worker's evaluation quotas and the embodied config checks."""

import numpy as np
import pytest
import torch

from rlinf.config import build_config
from rlinf.config.schema import EnvConfig, ModelConfig
from rlinf.envs.gym_env import GymVectorEnv, check_env_id
from rlinf.errors import InputError
from rlinf.models.mlp import build_mlp_policy
from rlinf.placement import build_placement
from rlinf.workflows import components_for

torch.set_num_threads(1)


def test_reset_and_step_shapes_and_seeding():
    env = GymVectorEnv("CartPole-v1", num_envs=3)
    obs = env.reset(seed=7)
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    assert (env.obs_dim, env.action_dim, env.discrete) == (4, 2, True)
    assert np.array_equal(obs, GymVectorEnv("CartPole-v1", num_envs=3).reset(seed=7))
    assert not np.array_equal(obs[0], obs[1])  # env i is seeded with seed + i
    obs, rewards, term, trunc, info = env.step(np.array([0, 1, 0]))
    assert obs.shape == (3, 4) and rewards.tolist() == [1.0, 1.0, 1.0]
    assert term.dtype == bool and trunc.dtype == bool and not info["done"].any()
    assert info["final_obs"].shape == (3, 4) and info["has_success"] is False


def test_termination_autoresets_in_the_same_step_with_episode_stats():
    env = GymVectorEnv("CartPole-v1", num_envs=2)
    env.reset(seed=0)
    for t in range(1, 200):  # always pushing left topples the pole within a few dozen steps
        obs, rewards, term, trunc, info = env.step(np.zeros(2, dtype=np.int64))
        if info["done"].any():
            break
    i = int(np.flatnonzero(info["done"])[0])
    assert term[i] and not trunc[i]
    assert info["episode_length"][i] == t and info["episode_return"][i] == float(t)  # reward 1 per step
    assert abs(info["final_obs"][i][2]) > 0.2  # the final obs has the pole past the limit...
    assert abs(obs[i][2]) < 0.05                # ...the returned obs is the fresh episode's start
    _, _, _, _, info2 = env.step(np.zeros(2, dtype=np.int64))
    assert not info2["done"][i]  # counters restarted for the new episode


def test_time_limit_truncation_keeps_final_obs():
    env = GymVectorEnv("CartPole-v1", num_envs=2, max_episode_steps=5)
    env.reset(seed=1)
    for _ in range(5):
        obs, _, term, trunc, info = env.step(np.array([0, 1]) if _ % 2 else np.array([1, 0]))
    assert trunc.all() and not term.any()
    assert info["episode_length"].tolist() == [5, 5] and info["episode_return"].tolist() == [5.0, 5.0]
    assert np.abs(info["final_obs"]).sum() > 0 and not np.array_equal(info["final_obs"], obs)


def test_continuous_actions_are_clipped_to_the_box():
    env = GymVectorEnv("Pendulum-v1", num_envs=2)
    assert (env.discrete, env.action_dim) == (False, 1)
    env.reset(seed=0)
    obs, rewards, *_ = env.step(np.array([[100.0], [-100.0]], dtype=np.float32))  # clipped to +-2
    assert obs.shape == (2, 3) and rewards.dtype == np.float32


def test_mujoco_task_through_gymnasium():
    pytest.importorskip("mujoco")
    env = GymVectorEnv("HalfCheetah-v5", num_envs=2, max_episode_steps=3)
    assert (env.discrete, env.obs_dim, env.action_dim) == (False, 17, 6)
    obs = env.reset(seed=0)
    for _ in range(3):
        obs, rewards, term, trunc, info = env.step(np.zeros((2, 6), dtype=np.float32))
    # HalfCheetah never terminates: the 3-step limit truncates both envs
    assert obs.shape == (2, 17) and trunc.all() and not term.any()
    assert info["episode_length"].tolist() == [3, 3] and np.isfinite(info["episode_return"]).all()


def test_unknown_env_id_names_the_key_and_suggests():
    with pytest.raises(InputError) as e:
        GymVectorEnv("CartPol-v1", num_envs=1)
    assert e.value.key == "env.id" and "CartPole-v1" in str(e.value)
    with pytest.raises(InputError, match="env.id"):
        check_env_id("NoSuchTaskAtAll-v9")


@pytest.mark.parametrize("discrete,action_dim", [(True, 3), (False, 2)])
def test_mlp_actor_critic_act_matches_evaluate(discrete, action_dim):
    model = build_mlp_policy(ModelConfig(kind="mlp", hidden_size=16, num_layers=2), 5, action_dim, discrete, seed=0)
    obs = torch.randn(7, 5)
    actions, logp, value = model.act(obs, generator=torch.Generator().manual_seed(0))
    assert actions.shape == ((7,) if discrete else (7, action_dim)) and logp.shape == value.shape == (7,)
    logp2, entropy, value2 = model.evaluate(obs, actions)
    assert torch.allclose(logp, logp2) and torch.allclose(value, value2) and (entropy > 0).all()
    greedy = model.act(obs, greedy=True)[0]
    assert torch.equal(greedy, model.act(obs, greedy=True)[0])
    same = build_mlp_policy(ModelConfig(kind="mlp", hidden_size=16, num_layers=2), 5, action_dim, discrete, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))


def test_env_worker_eval_counts_exactly_the_quota():
    from rlinf.workers.env.worker import EnvWorker

    worker = EnvWorker(EnvConfig(id="CartPole-v1", num_envs=2, max_episode_steps=20), stages=2, seed=0)
    assert [o.shape for o in worker.reset()] == [(1, 4), (1, 4)]
    out = worker.step(np.array([0]), stage=1)
    assert out["final_obs"] is None and out["episode_successes"] is None
    obs = worker.eval_reset(episodes=3, seed=5)
    assert obs.shape == (2, 4)
    for _ in range(100):
        res = worker.eval_step(np.zeros(2, dtype=np.int64))
        if res["finished"]:
            break
    stats = worker.eval_results()
    assert len(stats["returns"]) == 3 and stats["successes"] == []
    assert all(1 <= n <= 20 for n in stats["lengths"])


def _cfg(*overrides):
    cfg = build_config({"env": {"id": "CartPole-v1", "num_envs": 4, "rollout_steps": 8},
                        "actor": {"model": {"kind": "mlp"}}, "algorithm": {"adv_estimator": "gae"}}, overrides)
    return cfg, build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, cfg.rollout.pipeline_stages,
                                components_for(cfg))


@pytest.mark.parametrize("override,key", [
    ("critic.enabled=true", "critic.enabled"),
    ("algorithm.adv_estimator=reinforce_plus_plus", "algorithm.adv_estimator"),
    ("algorithm.adv_estimator=grpo", "env.max_episode_steps"),
    ("actor.model.kind=causal_lm", "actor.model.kind"),
    ("env.id=CartPol-v1", "env.id"),
    ("actor.global_batch_size=5", "actor.global_batch_size"),
])
def test_embodied_config_checks_name_the_key(override, key):
    from rlinf.workflows.embodied import validate

    cfg, placement = _cfg(override)
    with pytest.raises(InputError) as e:
        validate(cfg, placement)
    assert e.value.key == key
    validate(*_cfg())  # the base config is accepted
