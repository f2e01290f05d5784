"""ManiSkill3 adapter: the GymVectorEnv interface and info contract on PushCube-v1 (physx CPU)."""

import json

import numpy as np
import pytest
import torch

from rlinf.config.schema import EnvConfig
from rlinf.envs import check_env, make_vector_env
from rlinf.errors import InputError

pytest.importorskip("mani_skill")


def _env(n=2, **kw):
    cfg = EnvConfig(simulator="maniskill", id="PushCube-v1", reward_mode="normalized_dense", **kw)
    return make_vector_env(cfg, n)


def _actions(seed, steps, n=2):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (steps, n, 8)).astype(np.float32)


def test_state_spaces_and_shapes():
    env = _env(3)
    try:
        assert (env.obs_dim, env.action_dim, env.discrete) == (35, 8, False)
        obs = env.reset(seed=0)
        assert obs.shape == (3, 35) and obs.dtype == np.float32
        obs, rew, term, trunc, info = env.step(np.zeros((3, 8)))
        assert obs.shape == (3, 35) and rew.shape == (3,) and rew.dtype == np.float32
        assert term.dtype == bool and trunc.dtype == bool and info["has_success"] is True
        assert ((rew >= 0) & (rew <= 1)).all()  # normalized_dense
        frames = env.render()
        assert frames.shape == (3, 128, 128, 3) and frames.dtype == np.uint8 and frames.std() > 0
    finally:
        env.close()


def test_auto_reset_same_step_with_final_obs_and_episode_stats():
    env = _env(2, max_episode_steps=5)
    try:
        env.reset(seed=1)
        total = np.zeros(2)
        for t, a in enumerate(_actions(0, 5)):
            obs, rew, term, trunc, info = env.step(a)
            total += rew
            if t < 4:
                assert not info["done"].any() and not info["final_obs"].any()
        assert trunc.all() and not term.any() and info["done"].all()
        np.testing.assert_allclose(info["episode_return"], total, rtol=1e-6)
        assert info["episode_length"].tolist() == [5, 5]
        assert not info["success"].any()
        # obs is already the next episode's first observation; final_obs the old episode's last one
        assert np.abs(info["final_obs"]).sum() > 0 and not np.allclose(info["final_obs"], obs)
        for a in _actions(1, 4):
            _, _, _, trunc, info = env.step(a)
            assert not info["done"].any()
        _, _, _, trunc, info = env.step(np.zeros((2, 8)))
        assert trunc.all() and info["episode_length"].tolist() == [5, 5]  # counters restarted
    finally:
        env.close()


def test_seeding_is_deterministic_across_auto_resets():
    def run(seed):
        env = _env(2, max_episode_steps=4)
        try:
            out = [env.reset(seed=seed)]
            for a in _actions(7, 10):
                obs, rew, _, _, info = env.step(a)
                out += [obs, rew[:, None], info["final_obs"]]
            return np.concatenate([o.reshape(2, -1) for o in out], axis=1)
        finally:
            env.close()

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:, :35], c[:, :35])
    env = _env(2)
    try:
        first = env.reset(seed=3)
        assert not np.allclose(first[0], first[1])  # env i is seeded with seed + i
    finally:
        env.close()


def test_success_terminates_and_is_reported():
    env = _env(2)
    try:
        env.reset(seed=0)
        state = env.get_state()
        json.dumps(state)  # checkpoints store it as JSON
        assert state["complete"] is False
        sim = state["scenes"][0]["sim"]["actors"]
        cube, goal = sim["cube"]["data"][0], sim["goal_region"]["data"][0]
        cube[0:2] = goal[0:2]  # put env 0's cube on its goal
        env.set_state(state)
        obs, rew, term, trunc, info = env.step(np.zeros((2, 8)))
        assert term.tolist() == [True, False] and info["success"].tolist() == [True, False]
        assert info["episode_length"][0] == 1 and rew[0] > rew[1]
    finally:
        env.close()


def test_ignore_terminations_counts_success_at_any_step():
    env = _env(2, max_episode_steps=3, ignore_terminations=True)
    try:
        env.reset(seed=0)
        state = env.get_state()
        sim = state["scenes"][1]["sim"]["actors"]
        sim["cube"]["data"][0][0:2] = sim["goal_region"]["data"][0][0:2]  # env 1 starts solved
        env.set_state(state)
        for t in range(3):
            _, _, term, trunc, info = env.step(np.zeros((2, 8)))
            assert not term.any()  # success does not end the episode
        assert trunc.all() and info["success"].tolist() == [False, True]
        assert info["episode_length"].tolist() == [3, 3]
    finally:
        env.close()


def test_set_state_reproduces_observations():
    src, dst = _env(2), _env(2)
    try:
        src.reset(seed=10)
        dst.reset(seed=99)
        for a in _actions(2, 3):
            src.step(a)
        dst.set_state(src.get_state())
        acts = _actions(3, 3)
        for a in acts:
            o1, r1, *_ = src.step(a)
            o2, r2, *_ = dst.step(a)
            np.testing.assert_allclose(o1, o2, atol=1e-4)
            np.testing.assert_allclose(r1, r2, atol=1e-4)
        with pytest.raises(ValueError, match="does not fit"):
            _env(1).set_state(src.get_state())
    finally:
        src.close()
        dst.close()


def test_rgb_observations():
    env = _env(2, obs_mode="rgb", image_size=64)
    try:
        obs = env.reset(seed=0)
        assert obs["image"].shape == (2, 64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["state"].dtype == np.float32 and obs["state"].shape == (2, env.obs_dim)
        assert obs["instruction"].tolist() == ["push the cube to the goal region"] * 2
        assert env.render().shape == (2, 64, 64, 3)
    finally:
        env.close()


@pytest.mark.parametrize("env_id, match", [("PushCub-v1", "did you mean 'PushCube-v1'"),
                                           ("PickSingleYCB-v1", "unavailable: its assets ycb")])
def test_bad_task_ids(env_id, match):
    with pytest.raises(InputError, match=match) as err:
        check_env(EnvConfig(simulator="maniskill", id=env_id))
    assert err.value.key == "env.id"


def test_bad_settings():
    with pytest.raises(InputError) as err:
        _env(0)
    assert err.value.key == "env.num_envs"
    if not torch.cuda.is_available():
        with pytest.raises(InputError) as err:
            _env(1, sim_backend="gpu")
        assert err.value.key == "env.sim_backend"
