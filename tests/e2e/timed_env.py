"""CartPole whose every env step takes a known wall time, for tests that read overlap off the timeline.

Importing this module registers `ENV_ID` with gymnasium. Env workers are separate processes, so a test
hands them the config through `timed(cfg)`: it swaps `cfg.env` for a `TimedEnvConfig`, which pickles
by reference to this module, so unpickling it in a worker imports the module and registers the env
there before the worker builds its envs. (Ray workers of a local cluster find `tests` through the driver's
working directory, the repository root pytest runs from.)
"""

import dataclasses
import time

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

from rlinf.config.schema import EnvConfig

ENV_ID = "RlinfTimedCartPole-v1"
STEP_S = 0.01  # sleep per single-env step: a vector env of n envs takes n x STEP_S per step


class TimedCartPole(CartPoleEnv):
    def step(self, action):
        time.sleep(STEP_S)
        return super().step(action)


if ENV_ID not in gym.envs.registry:
    gym.register(ENV_ID, entry_point=TimedCartPole, max_episode_steps=500)


@dataclasses.dataclass
class TimedEnvConfig(EnvConfig):
    """An EnvConfig that makes the worker receiving it import this module."""


def timed(cfg):
    """`cfg` with its env replaced by the timed CartPole (other env settings kept)."""
    values = {f.name: getattr(cfg.env, f.name) for f in dataclasses.fields(EnvConfig)}
    cfg.env = TimedEnvConfig(**{**values, "id": ENV_ID})
    return cfg
