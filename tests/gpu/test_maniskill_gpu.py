"""GPU only (skipped without CUDA or without mani_skill): ManiSkill's PhysX GPU simulation behind rlinf's
vector-env interface, 64 parallel PushCube envs in one GPU scene batch. The simulation lives on the GPU;
observations, rewards and flags come back in rlinf's host form with the right shapes; a seeded reset is
reproducible; episodes end together at the time limit with their final observations. ManiSkill allows
one GPU simulation per process, so this file builds exactly one env. Run with `make test-gpu`."""

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.skipif(importlib.util.find_spec("mani_skill") is None, reason="needs mani_skill")]

N, OBS, ACT, LIMIT = 64, 35, 8, 5


def test_gpu_sim_resets_and_steps_64_envs():
    """sim_backend gpu: one physx_cuda batch of 64 on cuda, the simulator's observations a cuda tensor
    that rlinf hands back as host float32 [64, 35], finite; rewards in
    [0, 1] (normalized_dense); the same seed resets to the same observations and another seed does not;
    with ignore_terminations every episode ends at step 5 with length 5, a non-zero final observation and
    the return the rewards sum to; render gives [64, 128, 128, 3] uint8 frames."""
    from rlinf.config.schema import EnvConfig
    from rlinf.envs import make_vector_env

    cfg = EnvConfig(simulator="maniskill", id="PushCube-v1", reward_mode="normalized_dense", sim_backend="gpu",
                    max_episode_steps=LIMIT, ignore_terminations=True)
    env = make_vector_env(cfg, N)
    try:
        assert env.gpu and env.envs.device.type == "cuda"
        assert (env.obs_dim, env.action_dim, env.discrete) == (OBS, ACT, False)
        first = env.reset(seed=0)
        assert first.shape == (N, OBS) and first.dtype == np.float32 and np.isfinite(first).all()
        assert not np.allclose(first[0], first[1])  # env i is seeded with seed + i
        raw = env.envs.base_env.get_obs()  # the simulator's own batch: on the GPU
        assert isinstance(raw, torch.Tensor) and raw.device.type == "cuda" and tuple(raw.shape) == (N, OBS)
        np.testing.assert_allclose(raw.cpu().numpy(), first, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(env.reset(seed=0), first)
        assert not np.array_equal(env.reset(seed=100), first)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (LIMIT, N, ACT)).astype(np.float32)
        total = np.zeros(N)
        for t in range(LIMIT):
            obs, rew, term, trunc, info = env.step(actions[t])
            assert obs.shape == (N, OBS) and obs.dtype == np.float32 and np.isfinite(obs).all()
            assert rew.shape == (N,) and rew.dtype == np.float32 and ((rew >= 0) & (rew <= 1)).all()
            assert term.shape == trunc.shape == (N,) and term.dtype == trunc.dtype == bool
            total += rew
            if t < LIMIT - 1:
                assert not info["done"].any()
        assert info["done"].all() and trunc.all()
        assert (info["episode_length"] == LIMIT).all()
        np.testing.assert_allclose(info["episode_return"], total, rtol=1e-5)
        assert info["final_obs"].shape == (N, OBS) and (np.abs(info["final_obs"]).sum(axis=1) > 0).all()
        frames = env.render()
        assert frames.shape == (N, 128, 128, 3) and frames.dtype == np.uint8 and frames.std() > 0
    finally:
        env.close()
