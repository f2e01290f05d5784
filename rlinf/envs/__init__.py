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

from typing import Any, Dict

import numpy as np

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


def task_spec(env: Any) -> Dict[str, Any]:
    """What a policy for the vector env's task needs (the `spec` of rlinf.models.policy): obs_shape (array
    obs) or image_shape and state_dim (dict obs), obs_dim, action_dim, discrete, action_low / action_high
    (continuous)."""
    space = env.observation_space
    out: Dict[str, Any] = {"obs_dim": env.obs_dim, "action_dim": env.action_dim, "discrete": env.discrete,
                           "obs_shape": None, "image_shape": None, "state_dim": None,
                           "action_low": None, "action_high": None}
    if hasattr(space, "spaces"):  # dict observations: image (+ state, instruction)
        out["image_shape"] = tuple(space["image"].shape)
        out["state_dim"] = int(np.prod(space["state"].shape)) if "state" in space.spaces else 0
    else:
        out["obs_shape"] = tuple(space.shape)
    if not env.discrete:
        out["action_low"] = np.asarray(env.action_space.low, np.float64).reshape(-1).tolist()
        out["action_high"] = np.asarray(env.action_space.high, np.float64).reshape(-1).tolist()
    return out
