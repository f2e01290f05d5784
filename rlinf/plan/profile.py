"""Profiling: run a config for a few steps in two or three placements and fit its cost model.

This is the only part of rlinf.plan that starts anything: each profile run is `python -m rlinf.run` in a
subprocess (timeline on, plots, TensorBoard and evaluation off) with a wall-clock bound, and its
`metrics.jsonl` / `timeline.json` are read back (rlinf.utils.timeline.read_timeline).

Profile runs on D devices (the first `warmup` steps of each left out, medians of the rest):
- reasoning: colocated on device 0 only (d = 1) and colocated on all D devices (d = D), and on a CPU
  machine whose virtual devices share C cores (1 < C < D) also colocated on devices 0..C-1 (d = C, where
  more ranks stop helping); generate, reward and update each fitted through the points
  (rlinf.plan.cost_model.fit_points); the weight-sync cost is the d = D run's residual
  step - rollout - reward - update;
- agent: as reasoning (the env group plays the episodes inside the collection);
- single (SFT, reward-model training: one group, one plan): one run on all D devices, whose step time is
  the prediction;
- embodied: the same runs with k = 1 (the direct collection: per decision e + p), plus colocated on
  all devices with k = 2 (the controller-driven pipeline) for the controller's cost per stage call;
  p = the rollout ranks' mean `act` span (timeline), e = collect / decisions - p. The global env batch is
  held fixed: env.num_envs per rank = total envs / env ranks.
"""

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.plan.cost_model import PhaseCost, Workload, fit_points
from rlinf.plan.hardware import Hardware
from rlinf.plan.memory import (MemorySpec, activation_bytes_per_token, causal_lm_params, kv_bytes_per_token)
from rlinf.plan.simulate import Candidate, generation_groups
from rlinf.utils.timeline import read_timeline
from rlinf.workflows import components_for, workflow_name

logger = logging.getLogger(__name__)

QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=true",
         "runner.eval_interval=0", "runner.log_interval=1", "runner.save_interval=0", "runner.stop_metric=null",
         "runner.stop_value=null", "env.eval_episodes=1"]
WARMUP = 2
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# workflow -> the planner's kind (rlinf.plan.simulate.candidates)
KINDS = {"reasoning": "reasoning", "embodied": "embodied", "agent": "agent", "sft": "single", "reward_model": "single"}


def workload_kind(cfg: RLinfConfig) -> str:
    """The planner's kind of the config's workflow (KINDS); a workflow it does not know is an input error."""
    name = workflow_name(cfg)
    if name not in KINDS:
        raise InputError(f"the planner models the {', '.join(KINDS)} workflows, not '{name}'", key="runner.workflow")
    return KINDS[name]


def rows_per_step(cfg: RLinfConfig, kind: str) -> int:
    """Sequences a step trains on: prompts x group size (reasoning, agent), rows (single)."""
    return cfg.data.batch_size * (cfg.algorithm.group_size if kind in ("reasoning", "agent") else 1)


def total_envs(cfg: RLinfConfig) -> int:
    """Envs of the config's own placement: env.num_envs per env rank x env ranks."""
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    return cfg.env.num_envs * placement.world_size("env")


def memory_spec(cfg: RLinfConfig, kind: str) -> MemorySpec:
    """The MemorySpec of a config's own model (rlinf.plan.memory formulas; sequence = 32 prompt tokens +
    rollout.max_new_tokens for a model built from config)."""
    m = cfg.actor.model
    b = DTYPE_BYTES[m.dtype]
    if m.kind == "causal_lm" or m.kind == "vla":
        params = causal_lm_params(m.hidden_size, m.num_layers, len(m.char_vocab) + 4)
        seq = 32 + cfg.rollout.max_new_tokens
        act = activation_bytes_per_token(m.hidden_size, m.num_layers) * seq
        kv = kv_bytes_per_token(m.hidden_size, m.num_layers, b) * seq
    else:  # mlp / cnn policies: a few dense layers
        params = float(m.num_layers * m.hidden_size * m.hidden_size * 2 + 4096 * m.hidden_size)
        act, kv = float(m.hidden_size * m.num_layers * 4 * 4), 0.0
    batch = total_envs(cfg) if kind == "embodied" else rows_per_step(cfg, kind)
    return MemorySpec(params=params, trainable=params, param_bytes=b,
                      critic_params=params if cfg.critic.enabled else 0.0, reference=cfg.algorithm.kl_coef > 0,
                      activation_bytes_per_sample=act, micro_batch=cfg.actor.micro_batch_size,
                      kv_bytes_per_sample=kv, rollout_batch=batch, env_bytes_per_env=1e6 if kind == "embodied" else 0,
                      num_envs=total_envs(cfg) if kind == "embodied" else 0,
                      offload=cfg.actor.offload)


def placement_literal(placement: Dict[str, str]) -> str:
    """A component_placement as a YAML flow mapping for a key=value override (keys quoted: they hold commas)."""
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in placement.items()) + "}"


def plan_overrides(devices: int, placement: Dict[str, str], stages: int, schedule: str, staleness: int,
                   num_envs: Optional[int] = None) -> List[str]:
    """The dotlist of the keys a plan sets (`num_envs`: env.num_envs per env rank, embodied plans only)."""
    out = [f"cluster.num_devices={devices}", f"cluster.component_placement={placement_literal(placement)}",
           f"rollout.pipeline_stages={stages}", f"runner.schedule={schedule}", f"algorithm.max_staleness={staleness}"]
    return out + ([f"env.num_envs={num_envs}"] if num_envs is not None else [])


def candidate_overrides(c: Candidate, devices: int, kind: str, envs: int) -> List[str]:
    """The dotlist that runs candidate `c` (the keys the plan writes)."""
    num_envs = max(1, envs // c.rollout_devices) if kind == "embodied" else None
    return plan_overrides(devices, c.placement, c.pipeline_stages, c.schedule, c.max_staleness, num_envs)


def run_config(config: str, overrides: Sequence[str], out: Path, timeout_s: float) -> Tuple[List[dict], List[dict]]:
    """`python -m rlinf.run` for one profile / bench run; returns (metrics rows, timeline events)."""
    cmd = [sys.executable, "-m", "rlinf.run", "--config", config, "--log-level", "WARNING", *QUIET, *overrides,
           f"runner.output_dir={out}"]
    logger.info("run: %s", " ".join(cmd[3:]))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"profile run exceeded {timeout_s:.0f} s: {' '.join(overrides)}") from None
    if proc.returncode == 2:  # bad input of the config itself: rlinf.run's one line, which names the key
        lines = proc.stderr.strip().splitlines() or ["(no message)"]
        raise InputError(f"the profile run refused the config: {lines[-1].removeprefix('rlinf: error: ')}")
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"profile run failed ({proc.returncode}): {' / '.join(tail)}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timeline = out / "timeline.json"
    return rows, read_timeline(timeline) if timeline.exists() else []


def train_rows(rows: List[dict], warmup: int = WARMUP) -> List[dict]:
    """Training-step rows after the warm-up (rows with a step time)."""
    steps = [r for r in rows if "time/step_s" in r]
    return steps[warmup:] if len(steps) > warmup else steps[-1:]


def step_stats(rows: List[dict], warmup: int = WARMUP) -> Dict[str, float]:
    """Medians of the step's phase times, and the standard deviation of the collection time."""
    train = train_rows(rows, warmup)
    med = {k: statistics.median(r.get(f"time/{k}_s", 0.0) for r in train)
           for k in ("step", "rollout", "reward", "update")}
    for k in ("rollout", "step"):
        med[f"{k}_std"] = statistics.pstdev([r.get(f"time/{k}_s", 0.0) for r in train]) if len(train) > 1 else 0.0
    return med


def act_time(events: List[dict]) -> float:
    """Median duration of the rollout ranks' `act` spans (policy inference per decision, one rank's share)."""
    spans = [e["end"] - e["start"] for e in events if e["group"] == "rollout" and e["name"] == "act"]
    return statistics.median(spans) if spans else 0.0


def mid_devices(hw: Hardware, devices: int) -> Optional[int]:
    """The third profiled device count: the core count of a CPU machine whose virtual devices share its cores
    when 1 < cores < D (past it more ranks only contend); None for independent devices."""
    cores = hw.shared_cores
    return cores if cores is not None and 1 < cores < devices else None


def profile_runs(cfg_path: str, base: List[str], kind: str, devices: int, envs: int, steps: int,
                 work: Path, timeout_s: float, mid: Optional[int] = None) -> Dict[str, Tuple[List[dict], List[dict]]]:
    """The profile runs of the module docstring: run name -> (metrics rows, timeline events)."""
    if kind == "single":  # one plan (data parallel over every device): its own run is the prediction
        c = Candidate("all", {"actor": "all"}, "sync", rollout_devices=devices)
        return {"all": run_config(cfg_path, [*base, *candidate_overrides(c, devices, kind, envs),
                                             f"runner.max_steps={steps}"], work / "profile_all", timeout_s)}
    every = f"actor,{generation_groups(kind)}"
    runs = {"one": Candidate("one", {every: "0"}, "sync", rollout_devices=1),
            "all": Candidate("all", {every: "all"}, "sync", rollout_devices=devices)}
    if mid:
        runs["mid"] = Candidate("mid", {every: f"0-{mid - 1}"}, "sync", rollout_devices=mid)
    if kind == "embodied":
        runs["k2"] = Candidate("k2", {every: "all"}, "sync", pipeline_stages=2, rollout_devices=devices)
    out = {}
    for name, c in runs.items():
        t0 = time.time()
        try:
            out[name] = run_config(cfg_path, [*base, *candidate_overrides(c, devices, kind, envs),
                                              f"runner.max_steps={steps}"], work / f"profile_{name}", timeout_s)
        except InputError as e:
            if name != "k2":
                raise
            # a config that cannot be pipelined (e.g. GRPO groups wider than a stage's envs): no hybrid plans
            logger.info("no pipelined profile run (%s): hybrid plans left out", e)
            continue
        logger.info("profile %s: %.1f s", name, time.time() - t0)
    return out


def profile(cfg_path: str, cfg: RLinfConfig, overrides: Sequence[str], devices: int, hw: Hardware,
            work: Path, steps: int = 6, timeout_s: float = 600.0) -> Workload:
    """Run the profile runs of the module docstring and return the fitted Workload."""
    kind = workload_kind(cfg)
    envs = total_envs(cfg) if kind == "embodied" else 0
    mid = mid_devices(hw, devices)
    runs = profile_runs(cfg_path, list(overrides), kind, devices, envs, steps, work, timeout_s, mid)
    return fit_workload(cfg_path, cfg, runs, devices, hw, mid)


def fit_workload(cfg_path: str, cfg: RLinfConfig, runs: Dict[str, Tuple[List[dict], List[dict]]], devices: int,
                 hw: Hardware, mid: Optional[int] = None) -> Workload:
    """The Workload fitted from the profile runs (`profile_runs`: run name -> (metrics rows, timeline));
    `mid`: the device count of the `mid` run when there is one."""
    kind = workload_kind(cfg)
    envs = total_envs(cfg) if kind == "embodied" else 0
    spec = memory_spec(cfg, kind)
    if kind == "single":
        many = step_stats(runs["all"][0])
        return Workload(name=Path(cfg_path).stem, kind=kind, samples_per_step=rows_per_step(cfg, kind),
                        update=PhaseCost(serial_s=many["step"]), memory=spec, step_std_s=many["step_std"])
    one, many = step_stats(runs["one"][0]), step_stats(runs["all"][0])
    stats = {1: one, devices: many}
    if mid and "mid" in runs:
        stats[mid] = step_stats(runs["mid"][0])

    def fit(key: str) -> PhaseCost:
        return fit_points({d: st[key] for d, st in stats.items()}, devices, hw)

    update = fit("update")
    sync = max(0.0, many["step"] - many["rollout"] - many["reward"] - many["update"])
    weight_bytes = spec.params * spec.param_bytes
    samples = rows_per_step(cfg, kind)
    if kind in ("reasoning", "agent"):
        return Workload(name=Path(cfg_path).stem, kind=kind, samples_per_step=samples, update=update,
                        generate=fit("rollout"), reward=fit("reward"),
                        sync_fixed_s=sync, weight_bytes=weight_bytes, jitter_s=many["rollout_std"], memory=spec,
                        step_std_s=many["step_std"])
    T = cfg.env.rollout_steps // cfg.actor.model.action_chunk
    names = {1: "one", devices: "all", **{d: "mid" for d in stats if d not in (1, devices)}}
    policy = {d: act_time(runs[n][1]) for d, n in names.items()}
    env = {d: max(0.0, stats[d]["rollout"] / T - policy[d]) for d in names}
    w = Workload(name=Path(cfg_path).stem, kind=kind, samples_per_step=envs * cfg.env.rollout_steps,
                 update=update, generate=fit_points(policy, devices, hw), env=fit_points(env, devices, hw),
                 decisions=T, sync_fixed_s=sync, weight_bytes=weight_bytes, jitter_s=many["rollout_std"],
                 memory=spec, step_std_s=many["step_std"])
    if "k2" not in runs:  # the config refused a pipelined run (profile_runs)
        return replace(w, max_stages=1)
    k2 = step_stats(runs["k2"][0])["rollout"] / T
    e, p = w.env.time(devices, hw), w.generate.time(devices, hw)
    stage_call = max(0.0, (k2 - max(e, p) - min(e, p) / 2) / 2)
    return replace(w, stage_call_s=stage_call)


def describe(w: Workload, hw: Hardware, devices: int) -> str:
    """One line per fitted phase: t(1), t(D) and the fitted serial / work parts."""
    lines = [f"workload {w.name} ({w.kind}), {w.samples_per_step} samples/step, hardware {hw.name}"]
    if w.kind == "single":
        phases = {"step": w.update}
    elif w.kind == "embodied":
        phases = {"policy/decision": w.generate, "update": w.update, "env/decision": w.env}
    else:  # reasoning, agent (the agent's env group runs inside its collection: generate)
        phases = {"generate": w.generate, "update": w.update, "reward": w.reward}
    for name, pc in phases.items():
        fitted = (f"measured at d = {', '.join(f'{d}: {t:.4f} s' for d, t in pc.points)}" if pc.points
                  else f"serial {pc.serial_s:.4f}, work {pc.work_s:.4f}, per rank {pc.per_rank_s:.4f}")
        lines.append(f"  {name:<16} t(1) {pc.time(1, hw):8.4f} s  t({devices}) {pc.time(devices, hw):8.4f} s  "
                     f"({fitted})")
    lines.append(f"  weight sync fixed {w.sync_fixed_s:.4f} s, weights {w.weight_bytes / 1e6:.1f} MB, "
                 f"stage call {w.stage_call_s * 1e3:.2f} ms, collection jitter {w.jitter_s:.4f} s")
    return "\n".join(lines)

