"""Environments: text tasks with verifiable answers, and simulators behind one vector-env interface.

Every simulator adapter (`env.simulator`: gym, maniskill, libero) is a class with the interface and
`info` contract of `rlinf.envs.gym_env.GymVectorEnv`:

    env = make_vector_env(cfg.env, num_envs)
    obs = env.reset(seed=0)
    obs, rewards, terminated, truncated, info = env.step(actions)
    env.observation_space, env.action_space, env.discrete, env.obs_dim, env.action_dim
    env.get_state() / env.set_state(state)   (checkpoints; `complete` False when partial)
    env.render()                              uint8 frames [N, H, W, 3] for videos (rgb_array)
    env.close()

Observations are either one float32 array [N, *obs_shape] (state tasks) or a dict of arrays that
all lead with N (image tasks; see `rlinf.envs.obs`): "image" uint8 [N, H, W, 3] (upright),
"state" float32 [N, d] (proprioception), "instruction" object array [N] of str.
"""

from typing import Any

from rlinf.errors import InputError

SIMULATORS = ("gym", "maniskill", "libero")


def _module(simulator: str):
    if simulator == "gym":
        from rlinf.envs import gym_env as module
    elif simulator == "maniskill":
        from rlinf.envs import maniskill_env as module
    elif simulator == "libero":
        from rlinf.envs import libero_env as module
    else:
        raise InputError(f"unknown simulator '{simulator}' (one of {', '.join(SIMULATORS)})", key="env.simulator")
    return module


def check_env(env_cfg: Any) -> None:
    """Raise `InputError(key="env.id")` when `env.id` is not a task of `env.simulator` (before workers start)."""
    if env_cfg.id is None:
        raise InputError("an embodied run needs a task id", key="env.id")
    _module(env_cfg.simulator).check_env_id(env_cfg.id)


def make_vector_env(env_cfg: Any, num_envs: int):
    """`num_envs` copies of `env_cfg.id` on `env_cfg.simulator`, with the GymVectorEnv interface."""
    return _module(env_cfg.simulator).make_vector_env(env_cfg, num_envs)
