"""ManiSkill3 tasks behind the `GymVectorEnv` interface and `info` contract (see rlinf.envs.gym_env).

Two physics backends (`env.sim_backend`):

- cpu: one PhysX CPU scene per env (`num_envs=1`, rendered with sapien_cpu), each wrapped in
  ManiSkill's own `CPUGymWrapper` (numpy, unbatched) and vectorised by gymnasium's `SyncVectorEnv`
  with same-step auto-reset, exactly like `GymVectorEnv`.
- gpu: one PhysX GPU scene batch of `num_envs` (`physx_cuda`) behind ManiSkill's
  `ManiSkillVectorEnv`, which also auto-resets in the same step and hands the last observation of
  finished episodes back as `final_observation`.

Observations: obs_mode state -> float32 [N, d]; obs_mode rgb -> {"image": uint8 [N, H, W, 3] of the
task's first camera (ManiSkill images are already upright), "state": float32 [N, d] (robot
proprioception and the task's non-privileged extras, flattened), "instruction": object [N]}.

Episodes end when the task reports success (ManiSkill terminates on `success | fail`) or at the time
limit (`env.max_episode_steps`, else the task's registered one); `info["success"]` is ManiSkill's
`success` at the last step. With `env.ignore_terminations` episodes always run to the time limit and
`info["success"]` says whether the task succeeded at any step of the episode.

Assets: tasks whose assets are not installed (YCB objects, PartNet-Mobility, scene datasets) are
refused with an InputError before anything is built. ManiSkill's own fallback would ask on stdin or,
with MS_SKIP_ASSET_DOWNLOAD_PROMPT=1, download them; rlinf never downloads at run time.
"""

import difflib
import gc
import importlib
import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rlinf.errors import InputError

logger = logging.getLogger(__name__)

# Fixed per-task instruction strings for language-conditioned policies (ManiSkill tasks have none).
INSTRUCTIONS = {
    "PushCube-v1": "push the cube to the goal region",
    "PullCube-v1": "pull the cube to the goal region",
    "PickCube-v1": "pick up the cube and move it to the goal position",
    "StackCube-v1": "stack the red cube on top of the green cube",
    "PegInsertionSide-v1": "insert the peg into the hole on the side of the box",
    "PushT-v1": "push the T-shaped block onto the T-shaped target",
    "PlaceSphere-v1": "place the sphere into the bin",
    "LiftPegUpright-v1": "lift the peg and stand it upright",
    "PokeCube-v1": "use the peg to poke the cube to the goal region",
    "RollBall-v1": "roll the ball to the goal region",
}


def instruction(env_id: str) -> str:
    """The task's instruction string (a generic one for tasks without a curated string)."""
    return INSTRUCTIONS.get(env_id, f"solve the {env_id.rsplit('-v', 1)[0]} task")


def _registered() -> Dict[str, Any]:
    importlib.import_module("mani_skill.envs")  # importing registers the tasks
    from mani_skill.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS


def missing_assets(env_id: str) -> List[str]:
    """Asset sources the task declares that are not on disk (empty when it can run offline)."""
    from mani_skill.utils import assets

    missing = []
    for asset_id in _registered()[env_id].asset_download_ids or []:
        if asset_id in assets.DATA_GROUPS:
            sources = assets.expand_data_group_into_individual_data_source_ids(asset_id)
        else:
            sources = [asset_id]
        missing += [s for s in sources if not assets.is_data_source_downloaded(s)]
    return sorted(set(missing))


def check_env_id(env_id: str) -> None:
    """Raise `InputError(key="env.id")` for unknown ManiSkill tasks (with close matches) and for tasks
    whose assets are not installed."""
    ids = list(_registered())
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"unknown ManiSkill task '{env_id}'{hint}", key="env.id")
    missing = missing_assets(env_id)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise InputError(f"ManiSkill task '{env_id}' is unavailable: its assets {shown} are not installed and rlinf "
                         f"does not download at run time (fetch them once with "
                         f"`python -m mani_skill.utils.download_asset {env_id}`)", key="env.id")


def make_vector_env(env_cfg, num_envs: int) -> "ManiSkillVectorEnv":
    """The factory `rlinf.envs.make_vector_env` calls for `env.simulator: maniskill`."""
    return ManiSkillVectorEnv(env_cfg, num_envs)


def _use_gpu(sim_backend: str) -> bool:
    import torch

    if sim_backend == "gpu" and not torch.cuda.is_available():
        raise InputError("env.sim_backend 'gpu' needs CUDA, which this machine does not have", key="env.sim_backend")
    return sim_backend == "gpu" or (sim_backend == "auto" and torch.cuda.is_available())


class ManiSkillVectorEnv:
    """`num_envs` copies of a ManiSkill3 task with the interface of `GymVectorEnv` (continuous actions,
    clipped to the action space's bounds before stepping)."""

    discrete = False

    def __init__(self, cfg: Any, num_envs: int):
        import gymnasium as gym

        check_env_id(cfg.id)
        if num_envs < 1:
            raise InputError(f"need at least one environment, got {num_envs}", key="env.num_envs")
        self.env_id, self.num_envs, self.obs_mode = cfg.id, num_envs, cfg.obs_mode
        self.ignore_terminations = cfg.ignore_terminations
        self.gpu = _use_gpu(cfg.sim_backend)
        size = {"width": cfg.image_size, "height": cfg.image_size}
        kwargs: Dict[str, Any] = dict(obs_mode=cfg.obs_mode, render_mode="rgb_array", sensor_configs=size,
                                      human_render_camera_configs=size)
        if cfg.reward_mode is not None:
            kwargs["reward_mode"] = cfg.reward_mode
        if cfg.control_mode is not None:
            kwargs["control_mode"] = cfg.control_mode
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps
        self._instruction = np.array([instruction(cfg.id)] * num_envs, dtype=object)
        try:
            if self.gpu:
                self._build_gpu(kwargs)
            else:
                self._build_cpu(kwargs)
        except (ValueError, NotImplementedError, AssertionError) as e:
            # ManiSkill rejects unsupported reward/control/obs modes of a task while building it
            raise InputError(f"ManiSkill cannot build '{cfg.id}' with obs_mode={cfg.obs_mode}, reward_mode="
                             f"{cfg.reward_mode}, control_mode={cfg.control_mode}: {e}", key="env.id") from e
        if not isinstance(self.action_space, gym.spaces.Box):
            raise InputError(f"action space {self.action_space} of '{cfg.id}' is not supported (Box)",
                             key="env.control_mode")
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._succeeded = np.zeros(num_envs, dtype=bool)  # success at any step of the running episode

    # ---- construction --------------------------------------------------------------------------
    def _single(self, kwargs: Dict[str, Any]):
        import gymnasium as gym
        from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

        # enhanced_determinism: auto-resets draw their episode seed from the env's seeded main RNG
        # (otherwise from the process-global torch RNG), so seeded runs replay exactly
        env = gym.make(self.env_id, num_envs=1, sim_backend="physx_cpu", render_backend="sapien_cpu",
                       enhanced_determinism=True, **kwargs)
        if self.obs_mode == "rgb":
            env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=True)
        return CPUGymWrapper(env, ignore_terminations=self.ignore_terminations)

    def _build_cpu(self, kwargs: Dict[str, Any]) -> None:
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        self.envs = SyncVectorEnv([lambda: self._single(kwargs) for _ in range(self.num_envs)],
                                  autoreset_mode=AutoresetMode.SAME_STEP)
        self._set_spaces(self.envs.single_observation_space, self.envs.single_action_space)

    def _build_gpu(self, kwargs: Dict[str, Any]) -> None:
        import gymnasium as gym
        from mani_skill.utils.wrappers.flatten import FlattenRGBDObservationWrapper
        from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv as MSVectorEnv

        env = gym.make(self.env_id, num_envs=self.num_envs, sim_backend="physx_cuda", render_backend="gpu", **kwargs)
        if self.obs_mode == "rgb":
            env = FlattenRGBDObservationWrapper(env, rgb=True, depth=False, state=True)
        self.envs = MSVectorEnv(env, auto_reset=True, ignore_terminations=self.ignore_terminations,
                                record_metrics=False)
        self._set_spaces(self.envs.single_observation_space, self.envs.single_action_space)

    def _set_spaces(self, raw_space, action_space) -> None:
        import gymnasium as gym

        self.action_space = action_space
        if self.obs_mode == "state":
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, raw_space.shape, np.float32)
            return
        h, w = raw_space["rgb"].shape[:2]
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (h, w, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, raw_space["state"].shape, np.float32),
        })

    @property
    def metadata(self) -> Dict[str, Any]:
        """`render_fps`: the task's control frequency (videos play in real time)."""
        return {"render_fps": int(self._bases()[0].control_freq)}

    @property
    def obs_dim(self) -> int:
        """Size of the flat state vector (state tasks: the observation; rgb tasks: the proprio part)."""
        space = self.observation_space if self.obs_mode == "state" else self.observation_space["state"]
        return int(np.prod(space.shape))

    @property
    def action_dim(self) -> int:
        return int(np.prod(self.action_space.shape))

    # ---- stepping --------------------------------------------------------------------------------
    def _obs(self, raw: Any) -> Any:
        """ManiSkill's observation (numpy or torch, batched) in rlinf's form."""
        if self.obs_mode == "state":
            return _numpy(raw).astype(np.float32, copy=False)
        return {"image": np.ascontiguousarray(_numpy(raw["rgb"])[..., :3]).astype(np.uint8, copy=False),
                "state": _numpy(raw["state"]).astype(np.float32, copy=False),
                "instruction": self._instruction[: len(_numpy(raw["state"]))].copy()}

    def reset(self, seed: Optional[int] = None) -> Any:
        """Reset every env (env i seeded with seed + i); returns observations [N, ...]."""
        if self.gpu:
            seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
            raw, _ = self.envs.reset(seed=seeds)
        else:
            raw, _ = self.envs.reset(seed=seed)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._succeeded[:] = False
        return self._obs(raw)

    def step(self, actions: np.ndarray) -> Tuple[Any, np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
        """Step every env once: (obs, rewards [N] float32, terminated [N], truncated [N], info)."""
        actions = np.clip(np.asarray(actions, dtype=np.float32).reshape((self.num_envs, *self.action_space.shape)),
                          self.action_space.low, self.action_space.high)
        if self.gpu:
            import torch

            actions = torch.as_tensor(actions, device=self.envs.device)
        raw_obs, rewards, terminated, truncated, raw = self.envs.step(actions)
        obs = self._obs(raw_obs)
        rewards = _numpy(rewards).astype(np.float32).reshape(self.num_envs)
        terminated = _numpy(terminated).astype(bool).reshape(self.num_envs)
        truncated = _numpy(truncated).astype(bool).reshape(self.num_envs)
        done = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        final_obs = _zeros_like(obs)
        # this step's success: in `info` for running envs, in `final_info` for envs that just reset
        step_success = _flag(raw, "success", self.num_envs)
        if done.any():
            final_key = "final_observation" if self.gpu else "final_obs"
            if self.gpu:
                last = self._obs(raw[final_key])
                final_obs = _select(final_obs, last, done)
            else:
                for i in np.flatnonzero(done):
                    final_obs = _set_row(final_obs, i, self._obs(_batch1(raw[final_key][i])))
            step_success = np.where(done, _flag(raw.get("final_info", {}), "success", self.num_envs), step_success)
        self._succeeded |= step_success
        success = done & (self._succeeded if self.ignore_terminations else step_success)
        info = {"done": done, "final_obs": final_obs, "episode_return": np.where(done, self._returns, 0.0),
                "episode_length": np.where(done, self._lengths, 0), "success": success, "has_success": True}
        self._returns[done] = 0.0
        self._lengths[done] = 0
        self._succeeded[done] = False
        return obs, rewards, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The tasks' human-view camera, uint8 [N, image_size, image_size, 3]."""
        if self.gpu:
            return _numpy(self.envs.render())[..., :3].astype(np.uint8)
        return np.stack([np.asarray(f)[..., :3] for f in self.envs.call("render")]).astype(np.uint8)

    # ---- state capture (checkpoints) ----------------------------------------------------------------
    def _bases(self) -> list:
        return [self.envs.base_env] if self.gpu else [e.unwrapped for e in self.envs.envs]

    def get_state(self) -> Dict[str, Any]:
        """Simulation state as JSON-able data: ManiSkill's `get_state_dict()` (poses, velocities, joint
        positions/velocities, controller targets), elapsed steps, seeds and RNG states of every scene,
        plus the running episode returns / lengths.

        `complete` is False: PhysX solver internals (contact caches) and task attributes kept outside
        the state dict (e.g. goal positions some tasks store as plain tensors) are not captured, so a
        restored env matches the saved one in its observations but may drift from it afterwards.
        """
        return {"env_id": self.env_id, "num_envs": self.num_envs, "gpu": self.gpu,
                "scenes": [_scene_state(b) for b in self._bases()],
                "returns": self._returns.tolist(), "lengths": self._lengths.tolist(),
                "succeeded": self._succeeded.tolist(), "complete": False}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what `get_state` captured (same task, number of envs and backend)."""
        if (state["env_id"], state["num_envs"], state["gpu"]) != (self.env_id, self.num_envs, self.gpu):
            raise ValueError(f"env state of {state['num_envs']} x {state['env_id']} (gpu={state['gpu']}) does not fit "
                             f"{self.num_envs} x {self.env_id} (gpu={self.gpu})")
        for base, scene in zip(self._bases(), state["scenes"]):
            _restore_scene(base, scene)
        self._returns[:] = state["returns"]
        self._lengths[:] = state["lengths"]
        self._succeeded[:] = state["succeeded"]

    def close(self) -> None:
        # ManiSkill's close runs gc.collect() once per scene (seconds for dozens of CPU scenes in a big
        # process); with the live objects frozen each collection only scans what closing released
        gc.freeze()
        try:
            self.envs.close()
        finally:
            gc.unfreeze()


# ---- helpers -----------------------------------------------------------------------------------
def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _flag(info: Dict[str, Any], key: str, n: int) -> np.ndarray:
    """Boolean [n] entry `key` of a batched info dict (False where absent)."""
    if key not in info:
        return np.zeros(n, dtype=bool)
    return _numpy(info[key]).astype(bool).reshape(n)


def _batch1(single: Any) -> Any:
    """One env's unbatched observation as a batch of one."""
    if isinstance(single, dict):
        return {k: np.asarray(v)[None] for k, v in single.items()}
    return np.asarray(single)[None]


def _zeros_like(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: (np.full_like(v, "") if v.dtype == object else np.zeros_like(v)) for k, v in obs.items()}
    return np.zeros_like(obs)


def _set_row(dst: Any, i: int, row_batch: Any) -> Any:
    if isinstance(dst, dict):
        for k in dst:
            dst[k][i] = row_batch[k][0]
    else:
        dst[i] = row_batch[0]
    return dst


def _select(dst: Any, src: Any, mask: np.ndarray) -> Any:
    if isinstance(dst, dict):
        for k in dst:
            dst[k][mask] = src[k][mask]
    else:
        dst[mask] = src[mask]
    return dst


def _tree_to_lists(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_to_lists(v) for k, v in tree.items()}
    return {"data": _numpy(tree).tolist(), "dtype": str(_numpy(tree).dtype)}


def _tree_to_tensors(tree: Dict[str, Any], device: Any) -> Any:
    import torch

    if "data" in tree and "dtype" in tree:
        return torch.as_tensor(np.asarray(tree["data"], dtype=tree["dtype"]), device=device)
    return {k: _tree_to_tensors(v, device) for k, v in tree.items()}


def _rng_state(rng: np.random.RandomState) -> list:
    name, keys, pos, has_gauss, cached = rng.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_rng_state(rng: np.random.RandomState, data: list) -> None:
    rng.set_state((data[0], np.asarray(data[1], dtype=np.uint32), data[2], data[3], data[4]))


def _scene_state(base: Any) -> Dict[str, Any]:
    return {"sim": _tree_to_lists(base.get_state_dict()),
            "elapsed_steps": _numpy(base._elapsed_steps).tolist(),
            "main_seed": np.asarray(base._main_seed).tolist(),
            "episode_seed": np.asarray(base._episode_seed).tolist(),
            "main_rng": _rng_state(base._main_rng),
            "main_rngs": [_rng_state(r) for r in base._batched_main_rng.rngs],
            "episode_rngs": [_rng_state(r) for r in base._batched_episode_rng.rngs]}


def _restore_scene(base: Any, state: Dict[str, Any]) -> None:
    import torch

    base.set_state_dict(_tree_to_tensors(state["sim"], base.device))
    base._elapsed_steps[:] = torch.as_tensor(state["elapsed_steps"], dtype=base._elapsed_steps.dtype,
                                             device=base._elapsed_steps.device)
    base._main_seed = list(state["main_seed"])
    base._episode_seed = np.asarray(state["episode_seed"], dtype=np.int64)
    for rng, data in zip(base._batched_main_rng.rngs, state["main_rngs"]):
        _set_rng_state(rng, data)
    for rng, data in zip(base._batched_episode_rng.rngs, state["episode_rngs"]):
        _set_rng_state(rng, data)
    _set_rng_state(base._main_rng, state["main_rng"])
