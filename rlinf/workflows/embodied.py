"""Embodied workflow: PPO + GAE of an MLP actor-critic on vectorised simulator tasks (gymnasium).

Groups: env (EnvWorker, `env.num_envs` envs per rank), rollout (PolicyRolloutWorker: action
inference) and actor (EmbodiedActorWorker: data-parallel PPO). The critic is the actor-critic's
value head, so no critic group runs (`critic.enabled` must stay false). Phases the runner and its
schedule call: `sync_weights`, `collect(step)`, `train(batch)`, `evaluate()`.

One training step: the rollout picks actions for every env, the envs step, for T =
`env.rollout_steps` steps (the envs keep their state between training steps); the actor then runs
`algorithm.update_epochs` PPO epochs over the N x T batch (N = all envs) in minibatches of
`actor.global_batch_size`, and its weights go to the rollout through the resharding engine
(rlinf.reshard; `reshard.transport: object_store` sends a numpy state dict through Ray's object
store instead) before the next collection.

Async (`runner.schedule: async`, bound `algorithm.max_staleness`): `collect` runs on the schedule's
producer thread while `train` runs, so a batch may come from older weights; the actor then runs
decoupled PPO (proximal log-probs recomputed, truncated IS with `off_policy_correction: tis`) and the
engine stages weights so a rollout switches versions only between `act` calls.

Pipelining (`rollout.pipeline_stages` = k, hybrid placement): every env rank's envs are split into k
stages that are stepped in turn, each stage an independent lane alternating `rollout.act` and
`env.step`. The controller keeps all k lanes in flight, so while the env worker steps stage i the
rollout already infers on stage i+1, and it handles whichever call returns first (`wait_first`), so
each worker has its next call queued before it finishes the current one instead of idling while the
controller takes the lanes in a fixed order. With k = 1 this is the plain alternation.

Direct collection (sync schedule, k = 1, as many env ranks as rollout ranks): the controller makes no
call per env step; it issues one `EnvWorker.collect` per env rank, and env rank r asks rollout rank r
for each step's actions itself (a direct Ray call), then returns its [n, T] piece. The rows, RNG draws
and episode order are those of the controller-driven loop, so the batch is bit-identical to it; every
other layout (k > 1, async, env ranks != rollout ranks) keeps the controller-driven loop. Greedy evaluation
takes the same path under the same conditions: one `EnvWorker.run_eval` per env rank instead of a greedy
`act` and an `eval_step` per env step; the episodes and metrics are those of the controller loop.
"""

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from rlinf.config import RLinfConfig
from rlinf.envs import check_env
from rlinf.errors import InputError
from rlinf.placement import Placement
from rlinf.workflows.weight_sync import WeightSync, WeightSyncMixin
from rlinf.scheduler import Cluster, WorkerGroup, wait_first
from rlinf.envs import obs as obs_ops
from rlinf.workers.actor.embodied_actor import GROUP_ESTIMATORS, EmbodiedActorWorker
from rlinf.workers.env.worker import EnvWorker, counted_episodes
from rlinf.workers.rollout.policy_worker import PolicyRolloutWorker

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_000  # evaluation envs never share seeds with training envs
EVAL_MAX_STEPS = 100_000      # guard against tasks without a time limit


def is_async(cfg: RLinfConfig) -> bool:
    return cfg.runner.schedule == "async" or (cfg.runner.schedule == "auto" and cfg.algorithm.max_staleness > 0)


def validate(cfg: RLinfConfig, placement: Placement) -> None:
    """Reject what embodied PPO cannot run, naming the key, before any worker starts."""
    check_env(cfg.env)
    for key, asked in (("actor.offload", cfg.actor.offload), ("rollout.offload", cfg.rollout.offload)):
        if asked:  # the embodied actor and policy rollout have no offload / onload (yet)
            raise InputError("embodied runs do not offload between phases; set it to false", key=key)
    if cfg.critic.enabled:
        raise InputError("embodied PPO uses the actor-critic's value head; set critic.enabled=false",
                         key="critic.enabled")
    algo, model, env = cfg.algorithm, cfg.actor.model, cfg.env
    group = algo.adv_estimator in GROUP_ESTIMATORS
    if algo.adv_estimator != "gae" and not group:
        raise InputError(f"embodied runs support adv_estimator gae (PPO) or the group estimators "
                         f"{', '.join(GROUP_ESTIMATORS)}, got '{algo.adv_estimator}'", key="algorithm.adv_estimator")
    if model.kind not in ("mlp", "cnn", "vla"):
        raise InputError(f"embodied policies are mlp, cnn or vla, got '{model.kind}'", key="actor.model.kind")
    if env.simulator == "gym" and env.obs_mode != "state":
        raise InputError("gymnasium tasks run with obs_mode 'state'", key="env.obs_mode")
    if env.obs_mode == "state" and model.kind != "mlp":
        raise InputError(f"state observations need actor.model.kind mlp, got '{model.kind}'", key="actor.model.kind")
    if env.obs_mode == "rgb" and model.kind == "mlp":
        raise InputError("rgb observations need actor.model.kind cnn or vla", key="actor.model.kind")
    C = model.action_chunk
    if C > 1 and model.kind != "vla":
        raise InputError("action chunks need actor.model.kind vla", key="actor.model.action_chunk")
    if env.rollout_steps % C:
        raise InputError(f"env.rollout_steps = {env.rollout_steps} is not a multiple of the action chunk {C}",
                         key="env.rollout_steps")
    if algo.reward_level != "chunk" and algo.logprob_level == "chunk" and C > 1:
        raise InputError("per-action rewards need per-action log-probs: set algorithm.logprob_level=action or "
                         "algorithm.reward_level=chunk", key="algorithm.logprob_level")
    if algo.logprob_level == "chunk" and C > 1 and (algo.max_staleness > 0 or algo.off_policy_correction == "tis"):
        raise InputError("decoupled PPO / truncated IS weights are per action: use algorithm.logprob_level=action",
                         key="algorithm.logprob_level")
    if model.kind == "vla" and model.path is not None:
        from rlinf.models.openvla import check_checkpoint_dir

        check_checkpoint_dir(model)
    if model.kind == "vla" and model.path is None and env.image_size % model.patch_size:
        raise InputError(f"env.image_size {env.image_size} is not a multiple of the patch size {model.patch_size}",
                         key="actor.model.patch_size")
    stages = cfg.rollout.pipeline_stages
    if cfg.env.num_envs % stages:
        raise InputError(f"env.num_envs = {cfg.env.num_envs} does not split into {stages} pipeline stages",
                         key="rollout.pipeline_stages")
    n_envs = cfg.env.num_envs * placement.world_size("env")
    n_actor = placement.world_size("actor")
    if n_envs % n_actor:
        raise InputError(f"{n_envs} envs (env.num_envs x env ranks) do not split evenly over {n_actor} actor ranks",
                         key="env.num_envs")
    if group:
        if algo.group_size < 2:
            raise InputError("group-relative advantages need algorithm.group_size >= 2", key="algorithm.group_size")
        if (n_envs // n_actor) % algo.group_size:
            raise InputError(f"the {n_envs // n_actor} envs of each actor rank do not split into groups of "
                             f"{algo.group_size}", key="algorithm.group_size")
        per_stage = env.num_envs // stages
        if per_stage % algo.group_size:
            raise InputError(f"the {per_stage} envs of a pipeline stage do not split into groups of {algo.group_size}",
                             key="algorithm.group_size")
        if env.simulator == "libero":  # slot j runs task task_ids[j mod len]: a group must run one task
            tasks = list(env.task_ids) if env.task_ids else list(range(10))
            slot_task = [tasks[j % len(tasks)] for j in range(per_stage)]
            if any(slot_task[j] != slot_task[j - j % algo.group_size] for j in range(per_stage)):
                raise InputError(f"the envs of a group must run one task (slot j runs task_ids[j mod "
                                 f"{len(tasks)}]): repeat each task id group_size = {algo.group_size} times",
                                 key="env.task_ids")
        if env.max_episode_steps is None or env.max_episode_steps > env.rollout_steps:
            raise InputError("group estimators score whole episodes: set env.max_episode_steps <= env.rollout_steps "
                             f"({env.rollout_steps})", key="env.max_episode_steps")
    gbs = cfg.actor.global_batch_size
    if gbs is not None:
        total = n_envs * (cfg.env.rollout_steps // C)
        if total % gbs or gbs % n_actor or gbs // n_actor < 2:
            raise InputError(f"must divide the batch of {total} decisions (envs x rollout_steps / action_chunk) and "
                             f"split into >= 2 samples on each of {n_actor} actor ranks, got {gbs}",
                             key="actor.global_batch_size")


class EmbodiedWorkflow(WeightSyncMixin):
    def __init__(self, cfg: RLinfConfig, placement: Placement, phase):
        validate(cfg, placement)
        self.cfg, self.placement, self.phase = cfg, placement, phase
        self.stages = cfg.rollout.pipeline_stages
        self.version = 0          # weights version of the actor (updates done)
        self.weights: WeightSync  # set in start()
        self.groups: List[WorkerGroup] = []
        self.obs: Optional[List[obs_ops.Obs]] = None  # per stage: current observations of its envs
        self.chunk = cfg.actor.model.action_chunk
        self.group = cfg.algorithm.adv_estimator in GROUP_ESTIMATORS  # episodic collection, group-shared seeds

    def start(self, cluster: Cluster) -> None:
        cfg, devices = self.cfg, self.placement.devices
        self.env = WorkerGroup(cluster, EnvWorker, "env", devices["env"],
                               args=(cfg.env, self.stages, cfg.runner.seed, self.chunk), init_dist=False)
        self.groups.append(self.env)
        spec = self.env.call("spec").wait()[0]
        self.actor = WorkerGroup(cluster, EmbodiedActorWorker, "actor", devices["actor"],
                                 args=(cfg.actor, cfg.algorithm, spec, cfg.runner.seed, cfg.runner.max_steps),
                                 wait_ready=False)
        self.groups.append(self.actor)
        self.rollout = WorkerGroup(cluster, PolicyRolloutWorker, "rollout", devices["rollout"],
                                   args=(cfg.actor.model, spec, cfg.runner.seed), init_dist=False, wait_ready=False)
        self.groups.append(self.rollout)
        for group in (self.actor, self.rollout):  # launched side by side, then waited for
            group.ready()
        self.weights = WeightSync(self.actor, self.rollout, self.phase)
        self.direct = self.stages == 1 and not is_async(cfg) and self.env.size == self.rollout.size
        if self.direct:  # env rank r drives rollout rank r itself; `collect` is one call per env rank
            self.env.call("connect", self.rollout.actors).wait()
        n_params = self.actor.call("setup").wait()[0]
        if cfg.reshard.transport != "object_store":  # auto and engine: the resharding engine
            self.weights.use_engine(cfg.reshard, colocated=self.placement.shares_devices("actor", "rollout"),
                                    staged=is_async(cfg))
        logger.info("actor: %s parameters on %d rank(s); %d env rank(s) x %d envs; placement %s", f"{n_params:,}",
                    self.actor.size, self.env.size, cfg.env.num_envs, self.placement.mode)

    # ---- policy inference over the rollout ranks --------------------------------------------------
    def _submit_act(self, obs: obs_ops.Obs, greedy: bool = False, final_obs: Optional[obs_ops.Obs] = None,
                    cut: Optional[np.ndarray] = None):
        """Split rows contiguously over the rollout ranks and start `act`; returns the pending handle."""
        parts = [p for p in np.array_split(np.arange(obs_ops.size(obs)), self.rollout.size) if len(p)]
        shards = [{"obs": obs_ops.take(obs, p), "final_obs": None if final_obs is None else obs_ops.take(final_obs, p),
                   "cut": None if cut is None else cut[p]} for p in parts]
        return self.rollout.scatter("act", shards, ranks=list(range(len(parts))), greedy=greedy)

    @staticmethod
    def _act_results(handle) -> Dict[str, np.ndarray]:
        outs = handle.wait()
        res = {k: np.concatenate([o[k] for o in outs]) for k in ("actions", "logprobs", "values")}
        res["final_values"] = np.concatenate([o["final_values"] if o["final_values"] is not None
                                              else np.zeros(o["values"].shape, np.float32) for o in outs])
        res["version"] = min(o["version"] for o in outs)
        return res

    # ---- phases -----------------------------------------------------------------------------------
    def collect(self, step: int) -> Dict:
        """T decisions (env.rollout_steps / action_chunk) of every env; returns the [N, T(, C)] batch plus the
        episodes that ended meanwhile. Group estimators (GRPO): every env starts a fresh episode from its
        group's seed and the steps after its episode ends are masked out (one episode per env)."""
        if self.direct:
            return self._collect_direct(step)
        k, E, C = self.stages, self.env.size, self.chunk
        T = self.cfg.env.rollout_steps // C
        t0 = time.time()
        with self.phase("collect"):
            if self.obs is None or self.group:
                per_rank = self.env.scatter("reset", self._reset_seeds(step)).wait()
                self.obs = [obs_ops.concat([per_rank[r][s] for r in range(E)]) for s in range(k)]
            alive = [np.ones(obs_ops.size(self.obs[s]), bool) for s in range(k)]  # in its first episode
            buf = [defaultdict(list) for _ in range(k)]
            episodes: Dict[str, list] = {"returns": [], "lengths": [], "successes": []}
            versions = []
            # Each lane alternates act -> step -> act ...; whichever call finishes first is handled first, so a
            # worker gets its next call queued while it still runs the current one (with k >= 2 neither waits
            # for the controller). Both workers run calls in submission order, which stays lane 0 .. k-1 per
            # decision, so the batch does not depend on timing.
            pending: Dict[int, tuple] = {s: ("act", self._submit_act(self.obs[s])) for s in range(k)}
            order = list(range(k))  # lanes, oldest pending call first
            done_steps = [0] * k
            bootstrap: List[Optional[np.ndarray]] = [None] * k
            while order:
                s = order.pop(wait_first([pending[lane][1] for lane in order]))
                kind, handle = pending.pop(s)
                if kind == "act":
                    a = self._act_results(handle)
                    if done_steps[s] > 0:
                        buf[s]["final_values"].append(a["final_values"])  # V(final obs) of the previous step
                    if done_steps[s] == T:  # the bootstrap values after the last step: this lane is done
                        bootstrap[s] = a["values"]
                        continue
                    versions.append(a["version"])
                    for key in ("actions", "logprobs", "values"):
                        buf[s][key].append(a[key])
                    buf[s]["obs"].append(self.obs[s])
                    pending[s] = ("step", self.env.scatter("step", np.split(a["actions"], E), stage=s))
                    order.append(s)
                    continue
                outs = handle.wait()
                obs = obs_ops.concat([o["obs"] for o in outs])
                term = np.concatenate([o["terminated"] for o in outs])
                trunc = np.concatenate([o["truncated"] for o in outs])
                final_obs = obs_ops.concat([o["final_obs"] if o["final_obs"] is not None
                                            else obs_ops.zeros_like(o["obs"]) for o in outs])
                live = alive[s] if C == 1 else alive[s][:, None]
                buf[s]["rewards"].append(np.concatenate([o["rewards"] for o in outs]))
                buf[s]["dones"].append(term | trunc)
                buf[s]["mask"].append(np.concatenate([o["mask"] for o in outs]) & live)
                offset = 0
                for o in outs:
                    for key, values in counted_episodes(o, alive[s], self.group, offset).items():
                        episodes[key].extend(values)
                    offset += obs_ops.size(o["obs"])
                if self.group:
                    alive[s] &= ~(term | trunc).reshape(len(term), -1).any(axis=1)
                self.obs[s] = obs
                done_steps[s] += 1
                cut = trunc & ~term
                pending[s] = ("act", self._submit_act(obs, final_obs=final_obs if cut.any() else None, cut=cut))
                order.append(s)
        batch = {key: np.concatenate([np.stack(buf[s][key], axis=1) for s in range(k)])
                 for key in ("actions", "logprobs", "values", "rewards", "dones", "mask", "final_values")}
        batch["obs"] = obs_ops.concat([obs_ops.stack(buf[s]["obs"]) for s in range(k)])
        batch["bootstrap_values"] = np.concatenate(bootstrap)
        if self.group:
            batch["group_index"] = np.arange(len(batch["rewards"])) // self.cfg.algorithm.group_size
        return {"batch": batch, "episodes": episodes, "min_version": min(versions),
                "time": time.time() - t0}

    def _collect_direct(self, step: int) -> Dict:
        """`collect` without a controller round trip per env step (sync schedule, one pipeline stage, env rank
        r paired with rollout rank r): one `EnvWorker.collect` per env rank, which asks its rollout rank for
        the actions of every step itself; the controller only assembles the batch. Rows, RNG draws and
        episode order are those of the controller-driven loop, so the batch is bit-identical to it."""
        E, T = self.env.size, self.cfg.env.rollout_steps // self.chunk
        t0 = time.time()
        with self.phase("collect"):
            n = self.cfg.env.num_envs  # rows r * n .. (r + 1) * n - 1 are env rank r's envs
            if self.obs is None or self.group:
                starts = [{"obs": None, "seeds": seeds} for seeds in self._reset_seeds(step)]
            else:
                starts = [{"obs": obs_ops.take(self.obs[0], np.arange(r * n, (r + 1) * n))} for r in range(E)]
            handle = self.env.scatter("collect", starts, decisions=T, group=self.group)
            outs = handle.wait(timeout=self.env.timeout * (T + 1))  # a whole collection: T + 1 bounded act waits
        self.obs = [obs_ops.concat([o["last_obs"] for o in outs])]
        batch = {key: np.concatenate([o[key] for o in outs])
                 for key in ("actions", "logprobs", "values", "rewards", "dones", "mask", "final_values")}
        batch["obs"] = obs_ops.concat([o["obs"] for o in outs])
        batch["bootstrap_values"] = np.concatenate([o["bootstrap_values"] for o in outs])
        if self.group:
            batch["group_index"] = np.arange(len(batch["rewards"])) // self.cfg.algorithm.group_size
        episodes: Dict[str, list] = {"returns": [], "lengths": [], "successes": []}
        for t in range(T):  # step-major, rank order within a step: the controller loop's order
            for o in outs:
                for key in episodes:
                    episodes[key].extend(o["episodes_per_step"][t][key])
        return {"batch": batch, "episodes": episodes, "min_version": min(v for o in outs for v in o["versions"]),
                "time": time.time() - t0}

    def _reset_seeds(self, step: int) -> List[Optional[List[List[int]]]]:
        """Per env rank, per stage, the reset seed of each env; None: the env worker's own seeds (PPO, first
        reset). Group estimators: the envs of batch rows g * group_size .. (g + 1) * group_size - 1 share one
        seed, new at every step (rows are ordered stage, rank, env, as `collect` concatenates them)."""
        E = self.env.size
        if not self.group:
            return [None] * E
        per_stage, G = self.cfg.env.num_envs // self.stages, self.cfg.algorithm.group_size
        n_groups = per_stage * self.stages * E // G
        base = self.cfg.runner.seed + step * n_groups
        return [[[base + (s * E * per_stage + r * per_stage + j) // G for j in range(per_stage)]
                 for s in range(self.stages)] for r in range(E)]

    def train(self, rollout: Dict) -> Dict[str, float]:
        batch, episodes = rollout["batch"], rollout["episodes"]
        n, T = batch["rewards"].shape[:2]  # envs x decisions
        shards = [{key: obs_ops.take(value, idx) for key, value in batch.items()}
                  for idx in np.array_split(np.arange(n), self.actor.size)]
        t0 = time.time()
        with self.phase("train"):
            update = self.actor.scatter("update", shards)
            if self.load_weights_after_update:  # the new weights go to the rollout ranks as the update ends
                self.weights.load_after_update(self.version + 1)
            metrics = update.wait()[0]
        self.version += 1
        metrics.update({
            "samples": float(n * T),
            "env/reward_mean": float(batch["rewards"][batch["mask"]].mean()) if batch["mask"].any() else 0.0,
            "env/episodes": float(len(episodes["returns"])),
            "staleness/max": float(self.version - 1 - rollout["min_version"]),
            "staleness/channel": float(rollout.get("channel_staleness", 0)),
            "time/rollout_s": rollout["time"],
            "time/update_s": time.time() - t0,
            "weights/version": self.version,
        })
        metrics.update(_episode_metrics(episodes, "env/"))
        return metrics

    # ---- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        """Everything a resumed run needs to continue exactly as an uninterrupted one:

            actor/        model.pt, optim.pt, meta.json (rank 0; replicas are identical), rng_rank<r>.pt
            env/          rank_<r>.json: the training envs' simulation state (GymVectorEnv.get_state)
            workflow.pt   weights version, the envs' current observations, rollout sampling RNG per rank

        Under the async schedule the schedule calls this with its producer quiesced (no collect running),
        so env state, observations and RNG are those after the last produced batch; the schedule saves
        the produced, not yet trained batches beside them (schedule.pt).
        """
        actor = self.actor.call("save_checkpoint", f"{path}/actor", {"env_id": self.cfg.env.id})
        envs = self.env.call("get_state").wait()
        rollout_rng = self.rollout.call("get_rng_state").wait()
        (Path(path) / "env").mkdir(parents=True, exist_ok=True)
        for rank, state in enumerate(envs):
            (Path(path) / "env" / f"rank_{rank}.json").write_text(json.dumps(state))
        if not all(st["complete"] for state in envs for st in state["stages"]):
            logger.warning("env '%s' keeps state gymnasium's wrappers do not expose; a resumed run restarts "
                           "from the captured attributes only and may differ from an uninterrupted one",
                           self.cfg.env.id)
        torch.save({"version": self.version,
                    "obs": None if self.obs is None else [_obs_to_torch(o) for o in self.obs],
                    "rollout_rng": rollout_rng}, Path(path) / "workflow.pt")
        actor.wait()

    def check_checkpoint(self, path: str) -> None:
        """Before any worker starts or anything is written: is `path` an embodied checkpoint this config's
        policy can load (same task, same MLP shape)?"""
        meta_file = Path(path) / "actor" / "meta.json"
        if not meta_file.exists():
            raise InputError("not an embodied checkpoint (actor/meta.json missing)", key=str(path))
        meta = json.loads(meta_file.read_text())
        model, want = meta["model"], self.cfg.actor.model
        if meta.get("env_id") != self.cfg.env.id:
            raise InputError(f"checkpoint was trained on '{meta.get('env_id')}', this config runs '{self.cfg.env.id}'",
                             key=str(path))
        if model.get("kind", "mlp") != want.kind:
            raise InputError(f"checkpoint holds a {model.get('kind')} policy, this config builds a {want.kind} one",
                             key=str(path))
        if (model["hidden_size"], model["num_layers"]) != (want.hidden_size, want.num_layers):
            raise InputError(f"checkpoint holds a {_spec_text(model)} policy, this config builds "
                             f"{want.num_layers} x {want.hidden_size}", key=str(path))

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        """None when the checkpoint's policy spec, tensors and optimizer state fit this config's policy
        (`check_checkpoint`, the controller-side part, has run before the workers started)."""
        meta = json.loads((Path(path) / "actor" / "meta.json").read_text())
        expected = self.actor.call("model_spec", ranks=[0]).wait()[0]
        if meta["model"] != expected:
            return (f"checkpoint holds a {_spec_text(meta['model'])} policy, this config builds a "
                    f"{_spec_text(expected)} one")
        return self.actor.call("checkpoint_mismatch", f"{path}/actor", ranks=[0]).wait()[0]

    def load_checkpoint(self, path: str, step: int) -> None:
        """Load a checkpoint `checkpoint_mismatch` accepted."""
        src = Path(path)
        self.actor.call("load_checkpoint", str(src / "actor")).wait()
        self.version = step
        self.weights.reset()
        self.obs = None  # without saved env state the envs are reset at the next collection
        wf = torch.load(src / "workflow.pt", weights_only=True) if (src / "workflow.pt").exists() else None
        env_files = [src / "env" / f"rank_{r}.json" for r in range(self.env.size)]
        states = [json.loads(f.read_text()) for f in env_files if f.exists()]
        fits = (wf is not None and wf["obs"] is not None and len(states) == self.env.size
                and not (src / "env" / f"rank_{self.env.size}.json").exists()
                and all(st["num_envs"] == self.cfg.env.num_envs and len(st["stages"]) == self.stages for st in states))
        if fits:
            self.env.scatter("set_state", states).wait()
            self.obs = [_obs_from_torch(o) for o in wf["obs"]]
        else:
            logger.warning("checkpoint env state missing or saved with another env layout: the training envs "
                           "restart from fresh episodes")
        if wf is not None and len(wf["rollout_rng"]) == self.rollout.size:
            self.rollout.scatter("set_rng_state", wf["rollout_rng"]).wait()

    def evaluate(self) -> Dict[str, float]:
        """Greedy policy (argmax / mean action) on `env.eval_episodes` fresh episodes, same seeds every time."""
        self.sync_weights()
        E, total = self.env.size, self.cfg.env.eval_episodes
        counts = [total // E + (r < total % E) for r in range(E)]
        ranks = [r for r in range(E) if counts[r] > 0]
        seed = self.cfg.runner.seed + EVAL_SEED_OFFSET
        with self.phase("evaluate"):
            run = self._evaluate_direct if self.direct else self._evaluate_loop
            results, finished = run([counts[r] for r in ranks], ranks, seed)
        if not finished:
            raise RuntimeError(f"evaluation did not finish {total} episodes within {EVAL_MAX_STEPS} steps")
        episodes = {key: [x for res in results for x in res[key]] for key in ("returns", "lengths", "successes")}
        out = _episode_metrics(episodes, "")
        out["num_episodes"] = float(len(episodes["returns"]))
        return out

    def _evaluate_loop(self, counts: List[int], ranks: List[int], seed: int) -> Tuple[List[Dict], bool]:
        """The controller-driven evaluation: per env step one greedy `act` over all rows and one `eval_step`
        per env rank, at most EVAL_MAX_STEPS steps. Returns each rank's `eval_results` and whether all
        finished."""
        parts = self.env.scatter("eval_reset", counts, ranks=ranks, seed=seed).wait()
        finished = False
        for _ in range(EVAL_MAX_STEPS):
            sizes = np.cumsum([obs_ops.size(p) for p in parts])[:-1]
            actions = self._act_results(self._submit_act(obs_ops.concat(parts), greedy=True))["actions"]
            outs = self.env.scatter("eval_step", np.split(actions, sizes), ranks=ranks).wait()
            finished = all(o["finished"] for o in outs)
            if finished:
                break
            parts = [o["obs"] for o in outs]
        return self.env.call("eval_results", ranks=ranks).wait(), finished

    def _evaluate_direct(self, counts: List[int], ranks: List[int], seed: int) -> Tuple[List[Dict], bool]:
        """`_evaluate_loop` without a controller round trip per env step (the layouts of direct collection):
        one `EnvWorker.run_eval` per env rank, which asks its rollout rank for the greedy actions itself.
        Env rank r's rows go to rollout rank r on both paths (the eval envs per rank, min(num_envs, count),
        are np.array_split's contiguous split), so the episodes and their order are the same."""
        handle = self.env.scatter("run_eval", counts, ranks=ranks, seed=seed, max_decisions=EVAL_MAX_STEPS,
                                  local_policy_max_params=self.cfg.env.eval_local_policy_max_params)
        # the loop's bound, one group wait per step over at most EVAL_MAX_STEPS steps (each act inside is bounded)
        results = handle.wait(timeout=self.env.timeout * (EVAL_MAX_STEPS + 1))
        return results, all(res["finished"] for res in results)


def _obs_to_torch(obs: obs_ops.Obs):
    """Observations in a form torch.load(weights_only=True) reads back: tensors, strings as a list."""
    if isinstance(obs, dict):
        return {k: (list(map(str, v)) if v.dtype == object else torch.from_numpy(np.ascontiguousarray(v)))
                for k, v in obs.items()}
    return torch.from_numpy(obs)


def _obs_from_torch(obs) -> obs_ops.Obs:
    if isinstance(obs, dict):
        return {k: (np.array(v, dtype=object) if isinstance(v, list) else v.numpy()) for k, v in obs.items()}
    return obs.numpy()


def _spec_text(spec: Dict[str, object]) -> str:
    return (f"{spec.get('kind', 'mlp')} {spec['obs_dim']}->{spec['action_dim']} ({'discrete' if spec['discrete'] else 'continuous'}, "
            f"{spec['num_layers']} x {spec['hidden_size']})")


def _episode_metrics(episodes: Dict[str, list], prefix: str) -> Dict[str, float]:
    """Mean return / length (and success rate when the task reports success) of finished episodes."""
    out: Dict[str, float] = {}
    if episodes["returns"]:
        out[f"{prefix}return"] = float(np.mean(episodes["returns"]))
        out[f"{prefix}return_std"] = float(np.std(episodes["returns"]))
        out[f"{prefix}length"] = float(np.mean(episodes["lengths"]))
    if episodes["successes"]:
        out[f"{prefix}success_rate"] = float(np.mean(episodes["successes"]))
    return out
