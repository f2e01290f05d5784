"""EnvWorker: `env.num_envs` simulator copies per rank, stepped with actions from the rollout.

The training envs of a rank are split into `stages` equal vector envs (the hybrid pipeline's
stages; 1 otherwise) that keep their state across training steps, so a rollout of T steps
continues where the previous one stopped (as in CleanRL's PPO). A separate set of evaluation envs,
seeded the same way at every evaluation, runs a fixed number of episodes per rank.

Seeds: training env j of rank r (j counted over the stages) starts from seed + r * num_envs + j and
auto-resets from its own generator; evaluation env j of rank r from eval_seed + r * num_envs + j.
`reset(seeds)` takes explicit per-env seeds instead (GRPO groups share one).

Action chunks (`chunk` = C > 1): `step` takes actions [n, C, action_dim] and executes them open-loop,
one env step each; the per-step results are [n, C] with `mask` 0 on the steps after an env's episode
ended inside the chunk (its chunk ends there: those steps' rewards and episodes are not counted). The
vector env resets an ended episode at once, so the rest of that chunk runs in the new episode
(unrecorded): its start state moves by up to C - 1 steps. Recipes avoid this with episode lengths
that are multiples of C (and ignore_terminations), or with GRPO's one-episode-per-collect.
"""

import logging
from typing import Dict, List, Optional

import numpy as np

from rlinf.config.schema import EnvConfig
from rlinf.envs import make_vector_env, task_spec
from rlinf.envs import obs as obs_ops
from rlinf.errors import InputError
from rlinf.scheduler import Worker

logger = logging.getLogger(__name__)


class EnvWorker(Worker):
    """Vectorised gymnasium envs of one rank: `reset`, `step(actions, stage)`, greedy-eval episodes."""

    def __init__(self, cfg: EnvConfig, stages: int, seed: int, chunk: int = 1):
        super().__init__()
        self.chunk = chunk
        if cfg.id is None:
            raise InputError("an env worker needs a task id", key="env.id")
        if cfg.num_envs % stages:
            raise InputError(f"env.num_envs = {cfg.num_envs} does not split into {stages} pipeline stages",
                             key="rollout.pipeline_stages")
        self.cfg, self.seed = cfg, seed
        self.per_stage = cfg.num_envs // stages
        self.envs = [make_vector_env(cfg, self.per_stage) for _ in range(stages)]
        self.eval_env = None  # built at the first eval_reset
        self._eval_left = np.zeros(0, dtype=np.int64)
        self._eval_stats: Dict[str, list] = {}

    def spec(self) -> Dict[str, object]:
        """What a policy for this task needs (see `rlinf.envs.task_spec`)."""
        return task_spec(self.envs[0])

    # ---- training envs --------------------------------------------------------------------------
    def reset(self, seeds: Optional[List[List[int]]] = None) -> List[obs_ops.Obs]:
        """Reset every stage (env i of stage s seeded with `seeds[s][i]` when given); returns the observations
        of each stage [num_envs / stages, ...]."""
        base = self.seed + self.rank * self.cfg.num_envs
        return [env.reset(seed=base + s * self.per_stage if seeds is None else list(seeds[s]))
                for s, env in enumerate(self.envs)]

    def step(self, actions: np.ndarray, stage: int = 0) -> Dict[str, object]:
        """Step the envs of `stage` once.

        Returns obs (next observations, already reset where an episode ended), rewards, terminated,
        truncated [n]; final_obs [n, *obs_shape] (the last observation of episodes cut by the time
        limit, for bootstrapping V) or None when no env of the stage was truncated; and the
        returns / lengths / successes (None if the task reports none) of the episodes that ended.
        """
        if self.chunk > 1:
            return self._step_chunk(self.envs[stage], actions)
        obs, rewards, terminated, truncated, info = self.envs[stage].step(actions)
        done = info["done"]
        cut = truncated & ~terminated
        return {"obs": obs, "rewards": rewards, "terminated": terminated, "truncated": truncated,
                "mask": np.ones(len(rewards), bool),
                "final_obs": info["final_obs"] if cut.any() else None,
                "episode_envs": np.flatnonzero(done).tolist(),
                "episode_returns": info["episode_return"][done].tolist(),
                "episode_lengths": info["episode_length"][done].tolist(),
                "episode_successes": info["success"][done].tolist() if info["has_success"] else None}

    def _step_chunk(self, env, actions: np.ndarray) -> Dict[str, object]:
        """Execute a chunk [n, C, ...] open-loop; per-step results [n, C] (see the module docstring)."""
        n, C = actions.shape[0], self.chunk
        if actions.shape[1] != C:
            raise ValueError(f"expected action chunks of {C}, got actions of shape {actions.shape}")
        rewards = np.zeros((n, C), np.float32)
        terminated, truncated, mask = np.zeros((n, C), bool), np.zeros((n, C), bool), np.zeros((n, C), bool)
        alive = np.ones(n, bool)
        final_obs, any_cut = None, False
        ep: Dict[str, list] = {"envs": [], "returns": [], "lengths": [], "successes": []}
        for c in range(C):
            obs, r, term, trunc, info = env.step(actions[:, c])
            mask[:, c] = alive
            rewards[:, c] = np.where(alive, r, 0.0)
            terminated[:, c], truncated[:, c] = term & alive, trunc & alive
            cut = trunc & ~term & alive
            if cut.any():  # keep the last observation of a cut episode (V(s_final) bootstrap)
                if final_obs is None:
                    final_obs = obs_ops.zeros_like(info["final_obs"])
                _assign_rows(final_obs, info["final_obs"], cut)
                any_cut = True
            for i in np.flatnonzero(info["done"] & alive):
                ep["envs"].append(int(i))
                ep["returns"].append(float(info["episode_return"][i]))
                ep["lengths"].append(int(info["episode_length"][i]))
                if info["has_success"]:
                    ep["successes"].append(bool(info["success"][i]))
            alive &= ~info["done"]
            if not alive.any():
                break
        return {"obs": obs, "rewards": rewards, "terminated": terminated, "truncated": truncated, "mask": mask,
                "final_obs": final_obs if any_cut else None, "episode_envs": ep["envs"],
                "episode_returns": ep["returns"], "episode_lengths": ep["lengths"],
                "episode_successes": ep["successes"] if info["has_success"] else None}

    # ---- checkpoints ------------------------------------------------------------------------------
    def get_state(self) -> Dict[str, object]:
        """The training envs' state, one entry per stage (JSON-able; see GymVectorEnv.get_state)."""
        return {"num_envs": self.cfg.num_envs, "stages": [env.get_state() for env in self.envs]}

    def set_state(self, state: Dict[str, object]) -> None:
        """Restore `get_state`'s result; the envs then continue exactly where the saved ones were."""
        if state["num_envs"] != self.cfg.num_envs or len(state["stages"]) != len(self.envs):
            raise ValueError(f"env state of {state['num_envs']} envs in {len(state['stages'])} stages does not fit "
                             f"{self.cfg.num_envs} envs in {len(self.envs)} stages")
        for env, st in zip(self.envs, state["stages"]):
            env.set_state(st)

    # ---- evaluation -------------------------------------------------------------------------------
    def eval_reset(self, episodes: int, seed: int) -> np.ndarray:
        """Start `episodes` evaluation episodes on min(num_envs, episodes) envs (quotas differ by <= 1)."""
        if episodes < 1:
            raise ValueError(f"eval_reset needs at least one episode, got {episodes}")
        n = min(self.cfg.num_envs, episodes)
        if self.eval_env is None or self.eval_env.num_envs != n:
            if self.eval_env is not None:
                self.eval_env.close()
            self.eval_env = make_vector_env(self.cfg, n)
        self._eval_left = np.array([episodes // n + (i < episodes % n) for i in range(n)], dtype=np.int64)
        self._eval_stats = {"returns": [], "lengths": [], "successes": []}
        return self.eval_env.reset(seed=seed + self.rank * self.cfg.num_envs)

    def eval_step(self, actions: np.ndarray) -> Dict[str, object]:
        """Step the evaluation envs; episodes past an env's quota are not counted. `finished`: all quotas met."""
        chunk = [actions] if self.chunk == 1 else [actions[:, c] for c in range(self.chunk)]
        for step_actions in chunk:  # a chunk runs open-loop
            obs, _, _, _, info = self.eval_env.step(step_actions)
            for i in np.flatnonzero(info["done"] & (self._eval_left > 0)):
                self._eval_left[i] -= 1
                self._eval_stats["returns"].append(float(info["episode_return"][i]))
                self._eval_stats["lengths"].append(int(info["episode_length"][i]))
                if info["has_success"]:
                    self._eval_stats["successes"].append(bool(info["success"][i]))
            if not self._eval_left.any():
                break
        return {"obs": obs, "finished": not self._eval_left.any()}

    def eval_results(self) -> Dict[str, list]:
        """returns, lengths and successes (empty if the task reports none) of the counted episodes."""
        return self._eval_stats

    def _rlinf_shutdown(self) -> None:
        for env in self.envs + ([self.eval_env] if self.eval_env is not None else []):
            env.close()
        super()._rlinf_shutdown()


def _assign_rows(dst: obs_ops.Obs, src: obs_ops.Obs, rows: np.ndarray) -> None:
    """dst[rows] = src[rows] in place (array or dict observations)."""
    if isinstance(dst, dict):
        for k in dst:
            dst[k][rows] = src[k][rows]
    else:
        dst[rows] = src[rows]
