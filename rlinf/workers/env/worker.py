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

Direct collection (sync schedule, one pipeline stage, as many env ranks as rollout ranks): the
controller calls `connect(rollout_actors)` once, then `collect(...)` once per training step; the
env rank itself asks its rollout rank for actions (a direct Ray call, no controller round trip),
steps its envs and returns the whole [n, T] trajectory piece. Greedy evaluation likewise: `run_eval` runs
this rank's evaluation episodes to the end, asking the same rollout rank for greedy actions.
"""

import logging
from collections import defaultdict
from typing import Any, Callable, Dict, List, Optional, Sequence

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
        self.rollout: Optional[Any] = None  # the Ray actor of the paired rollout rank (direct collection)
        self._eval_policy: Optional[Any] = None  # local copy of a small policy for greedy evaluation
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

    # ---- direct collection (the controller issues one command, this rank drives its rollout rank) ----
    def connect(self, rollout_actors: Sequence[Any]) -> int:
        """Pair this rank with rollout rank `rank mod R` for `collect` and `run_eval`; returns that rank. The
        pairing must be one to one (R == env ranks, one pipeline stage): the rollout rank then samples exactly
        the rows the controller-driven path would give it, in the same order, so both paths draw the same
        actions."""
        if len(rollout_actors) != self.world_size:
            raise InputError(f"direct env <-> rollout collection pairs each of the {self.world_size} env rank(s) "
                             f"with one rollout rank, got {len(rollout_actors)} rollout rank(s)",
                             key="cluster.component_placement")
        if len(self.envs) != 1:
            raise InputError(f"direct collection runs one pipeline stage, got {len(self.envs)}",
                             key="rollout.pipeline_stages")
        self.rollout = self.paired_peer(list(rollout_actors))
        return self.rank % len(rollout_actors)

    def collect(self, start: Dict[str, Any], decisions: int, group: bool = False) -> Dict[str, Any]:
        """Run `decisions` env steps of this rank, asking the paired rollout rank (see `connect`) for the
        actions of each; records what the controller-driven collection records, in the same order.

        `start`: {"obs": current observations [n, ...], or None to reset first with "seeds" (per stage, per
        env, as `reset` takes them; None: this rank's own seeds)}. `group`: one episode per env (episodes
        ended after an env's first are masked out and not counted). Returns actions, logprobs, values,
        rewards, dones, mask, final_values and obs stacked [n, T(, C)], bootstrap_values [n], last_obs,
        versions (one per decision) and episodes_per_step (per step: returns, lengths, successes of the
        counted episodes that ended)."""
        if self.rollout is None:
            raise RuntimeError(f"{self.name}: collect before connect()")
        obs = self.reset(start.get("seeds"))[0] if start["obs"] is None else start["obs"]
        alive = np.ones(obs_ops.size(obs), bool)  # in its first episode (group estimators)
        buf: Dict[str, list] = defaultdict(list)
        per_step: List[Dict[str, list]] = []
        versions: List[int] = []
        final_obs, cut = None, None
        for t in range(decisions + 1):
            act = self._ask_rollout(obs, final_obs, cut)
            if t > 0:
                buf["final_values"].append(act["final_values"])  # V(final obs) of the previous step
            if t == decisions:
                break
            versions.append(act["version"])
            for key in ("actions", "logprobs", "values"):
                buf[key].append(act[key])
            buf["obs"].append(_copy_obs(obs))  # a simulator may reuse its buffers in place
            out = self.step(act["actions"])
            per_step.append(self._record_step(out, alive, buf, group))
            obs, cut = out["obs"], out["truncated"] & ~out["terminated"]
            final_obs = (out["final_obs"] if out["final_obs"] is not None
                         else obs_ops.zeros_like(out["obs"])) if cut.any() else None
        result = {key: np.stack(buf[key], axis=1)
                  for key in ("actions", "logprobs", "values", "rewards", "dones", "mask", "final_values")}
        result.update(obs=obs_ops.stack(buf["obs"]), bootstrap_values=act["values"], last_obs=obs,
                      versions=versions, episodes_per_step=per_step)
        return result

    def _ask_rollout(self, obs: obs_ops.Obs, final_obs: Optional[obs_ops.Obs],
                     cut: Optional[np.ndarray]) -> Dict[str, Any]:
        """One `act` on the paired rollout rank (direct Ray call, bounded wait); final_values None -> zeros."""
        out = self.call_peer(self.rollout, "act", {"obs": obs, "final_obs": final_obs, "cut": cut}, greedy=False)
        if out["final_values"] is None:
            out["final_values"] = np.zeros(out["values"].shape, np.float32)
        return out

    def _record_step(self, out: Dict[str, Any], alive: np.ndarray, buf: Dict[str, list],
                     group: bool) -> Dict[str, list]:
        """Append one step's rewards / dones / mask to `buf`; returns the counted episodes that ended. Updates
        `alive` in place (group estimators: an env leaves its first episode when it ends)."""
        term, trunc = out["terminated"], out["truncated"]
        buf["rewards"].append(np.array(out["rewards"], copy=True))
        buf["dones"].append(term | trunc)
        buf["mask"].append(out["mask"] & (alive if self.chunk == 1 else alive[:, None]))
        episodes = counted_episodes(out, alive, group)
        if group:
            alive &= ~(term | trunc).reshape(len(term), -1).any(axis=1)
        return episodes

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

    def run_eval(self, episodes: int, seed: int, max_decisions: int, local_policy_max_params: int = 0) -> Dict[str, Any]:
        """This rank's whole greedy evaluation without the controller (after `connect`): `eval_reset(episodes,
        seed)`, then `eval_step` with the greedy actions of the paired rollout rank's policy until every quota
        is met, at most `max_decisions` decisions: on a local copy when the policy has at most
        `local_policy_max_params` parameters, else by a direct Ray call per decision (bounded wait). Either
        way the policy gets the rows the controller-driven loop would give the rollout rank, so the episodes
        are the same. Returns `eval_results()` plus
        finished (False: stopped at `max_decisions` with episodes left; the caller reports it)."""
        if self.rollout is None:
            raise RuntimeError(f"{self.name}: run_eval before connect()")
        actions_for = self._greedy_policy(local_policy_max_params)
        obs, finished = self.eval_reset(episodes, seed), False
        for _ in range(max_decisions):
            out = self.eval_step(actions_for(obs))
            obs, finished = out["obs"], out["finished"]
            if finished:
                break
        return {**self.eval_results(), "finished": finished}

    def _greedy_policy(self, max_params: int) -> Callable[[obs_ops.Obs], np.ndarray]:
        """Greedy actions for an evaluation: from a local copy of the paired rollout rank's policy, fetched
        now, when it has at most `max_params` parameters (`env.eval_local_policy_max_params`; same
        `model.act` on the same weights and rows, so the same actions); else one direct call to the rollout
        rank per decision."""
        snapshot = self.call_peer(self.rollout, "policy_snapshot", max_params)
        if snapshot is None:
            return lambda obs: self.call_peer(self.rollout, "act", {"obs": obs, "final_obs": None, "cut": None},
                                              greedy=True)["actions"]
        from rlinf.models.lora import load_weights
        from rlinf.models.policy import build_policy, greedy_actions

        if self._eval_policy is None:
            self._eval_policy = build_policy(snapshot["model_cfg"], snapshot["spec"], snapshot["seed"]).to(self.device)
            self._eval_policy.eval()
        load_weights(self._eval_policy, {k: v.to(self.device) for k, v in snapshot["state"].items()})
        return lambda obs: greedy_actions(self._eval_policy, obs, self.device)

    def _rlinf_shutdown(self) -> None:
        for env in self.envs + ([self.eval_env] if self.eval_env is not None else []):
            env.close()
        super()._rlinf_shutdown()


def counted_episodes(out: Dict[str, Any], alive: np.ndarray, group: bool, offset: int = 0) -> Dict[str, list]:
    """Returns, lengths and successes of the episodes that ended in one `step` output `out`, leaving out, with
    `group` (one episode per env), envs no longer `alive` in their first episode; `offset`: the index in
    `alive` of `out`'s first env (outputs of several ranks concatenated)."""
    episodes: Dict[str, list] = {"returns": [], "lengths": [], "successes": []}
    for i, j in enumerate(out["episode_envs"]):
        if not group or alive[offset + j]:
            episodes["returns"].append(out["episode_returns"][i])
            episodes["lengths"].append(out["episode_lengths"][i])
            if out["episode_successes"] is not None:
                episodes["successes"].append(out["episode_successes"][i])
    return episodes


def _copy_obs(obs: obs_ops.Obs) -> obs_ops.Obs:
    """A copy that no later env step can write into (array or dict observations)."""
    if isinstance(obs, dict):
        return {k: np.array(v, copy=True) for k, v in obs.items()}
    return np.array(obs, copy=True)


def _assign_rows(dst: obs_ops.Obs, src: obs_ops.Obs, rows: np.ndarray) -> None:
    """dst[rows] = src[rows] in place (array or dict observations)."""
    if isinstance(dst, dict):
        for k in dst:
            dst[k][rows] = src[k][rows]
    else:
        dst[rows] = src[rows]
