"""Vectorised gymnasium environments behind one small interface.

    env = GymVectorEnv("CartPole-v1", num_envs=8)
    obs = env.reset(seed=0)                                   # [N, *obs_shape] float32
    obs, rewards, terminated, truncated, info = env.step(actions)

Auto-reset happens in the same step (gymnasium's `AutoresetMode.SAME_STEP`): when env i ends at
step t, `obs[i]` is already the first observation of its next episode and the last observation of
the finished one is `info["final_obs"][i]` (rows of envs that did not end are zeros). A truncated
(time-limit) step therefore can still be bootstrapped with V(final_obs).

`info` also carries, per env, `done` (terminated | truncated) and, valid where `done`:
    episode_return  sum of the rewards of the finished episode
    episode_length  its number of steps
    success         the env's own `success` / `is_success` flag at the end (False if it has none)
and `has_success` tells whether the env reports success at all (CartPole does not).
"""

import difflib
import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from rlinf.errors import InputError

logger = logging.getLogger(__name__)

_SUCCESS_KEYS = ("success", "is_success")


def _registry_ids() -> list:
    import gymnasium as gym

    return list(gym.envs.registry.keys())


def check_env_id(env_id: str) -> None:
    """Raise `InputError(key="env.id")` with the closest registered ids if `env_id` is unknown."""
    ids = _registry_ids()
    if env_id in ids:
        return
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise InputError(f"unknown gymnasium environment '{env_id}'{hint}", key="env.id")


def unsupported_spaces(observation_space: Any, action_space: Any) -> Optional[str]:
    """Why the embodied policies cannot run a task with these (single-env) spaces, or None when they can.

    The policies read one float vector per env (a Box of at least one dimension, flattened) and emit
    a Discrete action (numbered from 0) or a Box action vector."""
    import gymnasium as gym

    if not isinstance(observation_space, gym.spaces.Box) or not observation_space.shape:
        return f"observation space {observation_space} is not supported (a Box of at least one dimension)"
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            return f"action space {action_space} is not supported (Discrete actions must start at 0)"
        return None
    if not isinstance(action_space, gym.spaces.Box):
        return f"action space {action_space} is not supported (Discrete or Box)"
    return None


def check_spaces(env_id: str) -> None:
    """Build one `env_id` (no rendering, no reset) and raise `InputError(key="env.id")` when it cannot be
    built here or its spaces are ones the policies cannot handle. Run before any worker starts."""
    import gymnasium as gym

    check_env_id(env_id)
    try:
        env = gym.make(env_id, disable_env_checker=True)
    except (gym.error.Error, ImportError, OSError) as e:  # missing optional dependency (box2d, ale-py...), bad id
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"gymnasium cannot build '{env_id}': {type(e).__name__}: {first}", key="env.id") from None
    try:
        problem = unsupported_spaces(env.observation_space, env.action_space)
    finally:
        env.close()
    if problem:
        raise InputError(f"{problem} ('{env_id}')", key="env.id")


def make_vector_env(env_cfg, num_envs: int) -> "GymVectorEnv":
    """The factory `rlinf.envs.make_vector_env` calls for `env.simulator: gym`."""
    return GymVectorEnv(env_cfg.id, num_envs, env_cfg.max_episode_steps)


class GymVectorEnv:
    """`num_envs` copies of a gymnasium task in a `SyncVectorEnv` with same-step auto-reset.

    Discrete action spaces take integer actions [N]; Box action spaces take float actions
    [N, *shape], clipped to the space's bounds before stepping (the policy keeps the unclipped ones).
    """

    def __init__(self, env_id: str, num_envs: int, max_episode_steps: Optional[int] = None):
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        check_env_id(env_id)
        if num_envs < 1:
            raise InputError(f"need at least one environment, got {num_envs}", key="env.num_envs")
        # rgb_array rendering is lazy (a frame is drawn only when render() asks), so every env gets it
        kwargs: Dict[str, Any] = {"render_mode": "rgb_array"}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self.env_id, self.num_envs = env_id, num_envs
        self.envs = SyncVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)],
                                  autoreset_mode=AutoresetMode.SAME_STEP)
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        problem = unsupported_spaces(self.observation_space, self.action_space)
        if problem:
            self.envs.close()
            raise InputError(f"{problem} ('{env_id}')", key="env.id")
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.observation_space.shape))

    @property
    def action_dim(self) -> int:
        """Number of discrete actions, or the size of a continuous action vector."""
        return int(self.action_space.n) if self.discrete else int(np.prod(self.action_space.shape))

    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """Reset every env (env i seeded with seed + i); returns observations [N, *obs_shape] float32."""
        obs, _ = self.envs.reset(seed=seed)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return np.asarray(obs, dtype=np.float32)

    def step(self, actions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
        """Step every env once: (obs, rewards [N] float32, terminated [N], truncated [N], info)."""
        actions = np.asarray(actions)
        if self.discrete:
            actions = actions.astype(np.int64).reshape(self.num_envs)
        else:
            actions = np.clip(actions.reshape((self.num_envs, *self.action_space.shape)),
                              self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
        obs, rewards, terminated, truncated, raw = self.envs.step(actions)
        rewards = np.asarray(rewards, dtype=np.float32)
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        final_obs = np.zeros((self.num_envs, *self.observation_space.shape), dtype=np.float32)
        for i in np.flatnonzero(raw.get("_final_obs", np.zeros(self.num_envs, dtype=bool))):
            final_obs[i] = raw["final_obs"][i]
        success, has_success = self._success(raw, done)
        info = {"done": done, "final_obs": final_obs, "episode_return": np.where(done, self._returns, 0.0),
                "episode_length": np.where(done, self._lengths, 0), "success": success,
                "has_success": has_success}
        self._returns[done] = 0.0
        self._lengths[done] = 0
        return np.asarray(obs, dtype=np.float32), rewards, terminated, truncated, info

    def _success(self, raw: Dict[str, Any], done: np.ndarray) -> Tuple[np.ndarray, bool]:
        final = raw.get("final_info", {})
        for key in _SUCCESS_KEYS:
            if key in final:
                mask = final.get(f"_{key}", done)
                return np.asarray(final[key], dtype=bool) & mask & done, True
        return np.zeros(self.num_envs, dtype=bool), False

    # ---- state capture (exact resume of a run's training envs) ------------------------------------
    def get_state(self) -> Dict[str, Any]:
        """The envs' full simulation state as JSON-able data (see `_capture`), for checkpoints.

        Captured: every plain attribute (numbers, strings, numeric arrays, numpy generators) of the
        vector env, of every sub-env and of each wrapper around it, plus the running episode
        returns / lengths. That is the whole state of gymnasium's classic-control tasks; a simulator
        that keeps state in other objects (MuJoCo's MjData, GPU sims) is not captured completely, so
        `complete` is False when a layer holds attributes that are neither plain nor known-static.
        """
        layers = [_capture(self.envs)]
        complete = True
        for sub in self.envs.envs:
            chain = []
            layer = sub
            while True:
                state, ok = _capture(layer), _plain_only(layer)
                complete &= ok
                chain.append(state)
                if not hasattr(layer, "env"):
                    break
                layer = layer.env
            layers.append(chain)
        return {"env_id": self.env_id, "num_envs": self.num_envs, "vector": layers[0], "envs": layers[1:],
                "returns": _encode(self._returns), "lengths": _encode(self._lengths), "complete": complete}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what `get_state` captured (same task and number of envs)."""
        if state["env_id"] != self.env_id or state["num_envs"] != self.num_envs:
            raise ValueError(f"env state of {state['num_envs']} x {state['env_id']} does not fit "
                             f"{self.num_envs} x {self.env_id}")
        _restore(self.envs, state["vector"])
        for sub, chain in zip(self.envs.envs, state["envs"]):
            layer = sub
            for layer_state in chain:
                _restore(layer, layer_state)
                layer = getattr(layer, "env", None)
        self._returns[:] = _decode(state["returns"])
        self._lengths[:] = _decode(state["lengths"])

    def render(self) -> np.ndarray:
        """Every env's current frame (render_mode rgb_array), uint8 [N, H, W, 3], for videos."""
        return np.stack([np.asarray(frame, dtype=np.uint8) for frame in self.envs.call("render")])

    @property
    def metadata(self) -> Dict[str, Any]:
        """The task's gymnasium metadata (render_fps for videos)."""
        return self.envs.metadata

    def close(self) -> None:
        self.envs.close()


# Attributes of gymnasium objects that are configuration, not state: never captured or restored.
_STATIC_TYPES = ("Space", "EnvSpec", "AutoresetMode", "dict", "list", "tuple", "function", "NoneType")


def _encode(value: Any) -> Any:
    """A plain value as JSON-able data; None when it is not plain."""
    if isinstance(value, np.random.Generator):
        return {"__rng__": value.bit_generator.state}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            return None
        return {"__nd__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return _encode(np.asarray(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"__py__": value}
    return None


def _decode(data: Any) -> Any:
    if "__rng__" in data:
        rng = np.random.Generator(getattr(np.random, data["__rng__"]["bit_generator"])())
        rng.bit_generator.state = data["__rng__"]
        return rng
    if "__nd__" in data:
        return np.asarray(data["__nd__"], dtype=np.dtype(data["dtype"])).reshape(data["shape"])
    return data["__py__"]


def _capture(obj: Any) -> Dict[str, Any]:
    out = {"__class__": type(obj).__name__}
    for key, value in vars(obj).items():
        enc = _encode(value)
        if enc is not None:
            out[key] = enc
    return out


def _plain_only(obj: Any) -> bool:
    """True when every attribute of `obj` is plain (captured) or configuration (see _STATIC_TYPES)."""
    for key, value in vars(obj).items():
        if key == "env" or _encode(value) is not None:
            continue
        if not any(t in [c.__name__ for c in type(value).__mro__] for t in _STATIC_TYPES):
            return False
    return True


def _restore(obj: Any, state: Dict[str, Any]) -> None:
    if state["__class__"] != type(obj).__name__:
        raise ValueError(f"env state of a {state['__class__']} does not fit a {type(obj).__name__}")
    for key, value in state.items():
        if key != "__class__":
            setattr(obj, key, _decode(value))
