"""Candidate plans and the simulation of their training step. Pure functions of a `Workload` (cost model),
a `Hardware` and the device count; nothing here starts a worker.

Candidates on D devices (`candidates`):
- colocated:      every component on all D devices, sync schedule (phases time-share the devices);
- hybrid k:       (embodied) colocated, env batch split into k pipeline stages, k in 2, 4, ... max_stages;
- disaggregated:  actor (+ critic, reference) on a devices, rollout + reward / env on D - a, sync schedule,
                  for every split a (a grid of at most ~15 splits when D > 16);
- async s:        the disaggregated splits with the async schedule and max_staleness s in 1, 2 (not for
                  agent workloads: the agent workflow runs the sync schedule only);
- data parallel:  (single: SFT, reward-model training) the one group on all D devices, the only plan.

Step time (`step_time`), with G the collection time (below), U the update time on the actor's devices and
S the weight sync (rlinf.plan.cost_model.weight_sync_s):
- sync (colocated, hybrid, disaggregated):  T = S + G + tail + U   (phases follow one another; S includes
  the colocated residency switch);
- async s:   T = max(G, U + S, W / cores) + async_overhead + 0.4 x jitter / s
  (steady state: producer and consumer overlap, the generation tail hidden by streaming, the slower one
  sets the pace; W / cores is the bound of shared cores (virtual devices on a CPU only): the core-seconds
  of both sides, W = busy(G) + busy(U) with busy = t(d) x eff(d) (every rank busy while its phase runs),
  cannot exceed what the cores give; 0.4 sigma is E[max] - max(E) of two balanced normal stages,
  shrunk by the s batches a staleness bound lets the channel buffer).
Collection G on the rollout's d_r devices (env on the same devices):
- reasoning, agent: G = generate(d_r) + reward(d_r) (agent: the env group's episodes are the generation);
- single:           G = 0, T = U (the profiled step);
- embodied, sync, k = 1 (the direct collection, env ranks ask their rollout rank themselves):
                    G = decisions x (env(d_r) + policy(d_r));
- embodied, k > 1 or async (the controller drives every stage call):
                    G = decisions x max(max(e, p) + min(e, p) / k + k x stage_call, (busy_e + busy_p) / cores)
  with e = env(d_r), p = policy(d_r): the pipeline bound (stage i+1 of the env overlaps stage i of the
  policy; the fill / drain of one stage of the shorter phase is not hidden), each of the k stage calls
  paying the controller's call cost; on shared cores no faster than the cores allow.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from rlinf.plan.cost_model import Workload, weight_sync_s
from rlinf.plan.hardware import GIB, Hardware
from rlinf.plan.memory import peak_bytes_per_device

JITTER_FACTOR = 0.4


@dataclass(frozen=True)
class Candidate:
    name: str
    placement: Dict[str, str]  # cluster.component_placement
    schedule: str  # sync | async
    max_staleness: int = 0
    pipeline_stages: int = 1
    mode: str = "colocated"  # colocated | hybrid | disaggregated
    train_devices: int = 1
    rollout_devices: int = 1


@dataclass
class Prediction:
    candidate: Candidate
    step_s: float
    samples_per_s: float
    peak_gib: float
    feasible: bool
    why: str = ""
    parts: Dict[str, float] = field(default_factory=dict)


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _splits(devices: int) -> List[int]:
    """Devices for the actor in disaggregated candidates: every 1..D-1 up to D = 16, else ~15 even steps."""
    if devices <= 16:
        return list(range(1, devices))
    step = devices // 16
    return sorted({a for a in range(step, devices, step)} | {devices // 4, devices // 2, 3 * devices // 4})


def generation_groups(kind: str) -> str:
    """The groups that produce a step's samples: the rollout with its scoring group (the reward group for
    reasoning; the env group for simulators and for tool episodes, which grade themselves)."""
    return "rollout,reward" if kind == "reasoning" else "rollout,env"


def candidates(kind: str, devices: int, max_stages: int = 4, staleness: Tuple[int, ...] = (1, 2)) -> List[Candidate]:
    """Every candidate plan of the module docstring for `devices`. Kinds: reasoning, embodied, agent (the
    reasoning plans with the env group in place of the reward group, sync only: the agent workflow runs the
    sync schedule), single (SFT, reward-model training: one group, so the one plan is data parallel over
    every device)."""
    if kind == "single":
        return [Candidate("data_parallel", {"actor": "all"}, "sync", mode="colocated", train_devices=devices,
                          rollout_devices=devices)]
    if kind == "agent":
        staleness = ()
    gen = generation_groups(kind)
    everything = f"actor,{gen}"
    out = [Candidate("colocated", {everything: "all"}, "sync", mode="colocated",
                     train_devices=devices, rollout_devices=devices)]
    if kind == "embodied":
        k = 2
        while k <= max_stages:
            out.append(Candidate(f"hybrid_k{k}", {everything: "all"}, "sync", pipeline_stages=k, mode="hybrid",
                                 train_devices=devices, rollout_devices=devices))
            k *= 2
    for a in _splits(devices):
        place = {"actor": _span(0, a - 1), gen: _span(a, devices - 1)}
        common = dict(mode="disaggregated", train_devices=a, rollout_devices=devices - a)
        out.append(Candidate(f"disagg_{a}+{devices - a}", place, "sync", **common))
        for s in staleness:
            out.append(Candidate(f"async_s{s}_{a}+{devices - a}", place, "async", max_staleness=s, **common))
    return out


def collect_time(w: Workload, hw: Hardware, rollout_devices: int, stages: int,
                 direct: bool = True) -> Tuple[float, float]:
    """(G, work of G in device-seconds) of the module docstring."""
    d = rollout_devices
    if w.kind != "embodied":
        return w.generate.time(d, hw) + w.reward.time(d, hw), w.generate.busy(d, hw) + w.reward.busy(d, hw)
    e, p = w.env.time(d, hw), w.generate.time(d, hw)  # embodied: generate = policy inference per decision
    work = w.env.busy(d, hw) + w.generate.busy(d, hw)
    if stages <= 1 and direct:
        per = e + p
    else:
        per = max(e, p) + min(e, p) / stages + stages * w.stage_call_s
        if hw.shared_cores is not None:
            per = max(per, work / hw.shared_cores)
    return w.decisions * per, w.decisions * work


def step_time(w: Workload, hw: Hardware, c: Candidate, devices: int) -> Tuple[float, Dict[str, float]]:
    """Predicted seconds per training step of candidate `c` and its parts (module docstring)."""
    g, g_work = collect_time(w, hw, c.rollout_devices, c.pipeline_stages, direct=c.schedule == "sync")
    u = w.update.time(c.train_devices, hw)
    s = weight_sync_s(w, hw, separate=c.mode == "disaggregated", total_devices=devices)
    if c.mode in ("colocated", "hybrid"):
        s += w.switch.time(devices, hw)
    parts = {"collect": g, "update": u, "sync": s}
    if c.schedule == "sync":
        return s + g + w.tail_s + u, parts
    t = max(g, u + s)
    if hw.shared_cores is not None:
        t = max(t, (g_work + w.update.busy(c.train_devices, hw)) / hw.shared_cores)
    t += w.async_overhead_s + JITTER_FACTOR * w.jitter_s / max(1, c.max_staleness)
    return t, parts


def device_sets(c: Candidate, devices: int) -> Dict[str, List[int]]:
    """The candidate's placement as component -> device list (every component of the workload placed)."""
    out: Dict[str, List[int]] = {}
    for key, spec in c.placement.items():
        if spec == "all":
            devs = list(range(devices))
        else:
            lo, _, hi = spec.partition("-")
            devs = list(range(int(lo), int(hi or lo) + 1))
        for name in key.split(","):
            out[name] = devs
    return out


def predict(w: Workload, hw: Hardware, c: Candidate, devices: int, extra: Tuple[str, ...] = ()) -> Prediction:
    """Step time, samples/s and peak memory of one candidate; infeasible when a device's peak exceeds the
    usable bytes (Hardware.usable_bytes). `extra` names components that follow the actor (critic, reference)."""
    t, parts = step_time(w, hw, c, devices)
    peak = 0.0
    why = ""
    if w.memory is not None:
        sets = device_sets(c, devices)
        for name in extra:
            sets[name] = sets["actor"]
        offload = w.memory.offload and c.mode in ("colocated", "hybrid") and c.schedule == "sync"
        peak = max(peak_bytes_per_device(w.memory, sets, offload).values())
    feasible = peak <= hw.usable_bytes
    if not feasible:
        why = f"peak {peak / GIB:.1f} GiB > {hw.usable_bytes / GIB:.1f} GiB usable per device"
    if w.kind in ("reasoning", "agent", "single") and w.samples_per_step % c.train_devices:
        feasible, why = False, f"{w.samples_per_step} rows do not split over {c.train_devices} actor ranks"
    envs = w.memory.num_envs if w.memory is not None else 0
    per_rank = envs // c.rollout_devices if envs else 0
    if w.kind == "embodied" and envs and envs % c.rollout_devices:  # the global env batch must stay whole
        feasible, why = False, f"{envs} envs do not split over {c.rollout_devices} env ranks"
    elif w.kind == "embodied" and envs and (per_rank * c.rollout_devices) % c.train_devices:
        feasible, why = False, f"{per_rank * c.rollout_devices} envs do not split over {c.train_devices} actor ranks"
    if w.kind == "embodied" and c.pipeline_stages > 1 and envs and per_rank < c.pipeline_stages:
        feasible, why = False, f"{per_rank} envs per rank < {c.pipeline_stages} stages"
    return Prediction(c, t, w.samples_per_step / t if t > 0 else math.inf, peak / GIB, feasible, why, parts)


def rank(predictions: List[Prediction]) -> List[Prediction]:
    """Feasible plans by predicted step time (fastest first), then infeasible ones by how far they miss."""
    ok = sorted((p for p in predictions if p.feasible), key=lambda p: (p.step_s, p.candidate.name))
    bad = sorted((p for p in predictions if not p.feasible), key=lambda p: (p.peak_gib, p.candidate.name))
    return ok + bad


def plan(w: Workload, hw: Hardware, devices: int, extra: Tuple[str, ...] = (),
         only: Optional[List[str]] = None) -> List[Prediction]:
    """Ranked predictions of every candidate (or those named in `only`)."""
    cands = candidates(w.kind, devices, w.max_stages)
    if only is not None:
        cands = [c for c in cands if c.name in only]
    return rank([predict(w, hw, c, devices, extra) for c in cands])
