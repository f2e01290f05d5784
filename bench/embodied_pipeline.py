"""Embodied placement: colocated vs hybrid (pipeline k = 2, 4) vs disaggregated collection speed.

    python -m bench.embodied_pipeline [--quick] [--workload maniskill_mlp|maniskill_balanced|libero_tinyvla|both] [--repeats R]

Workloads (the same envs, policy and batch in every mode):
- maniskill_mlp:  ManiSkill3 PushCube-v1, state observations, physx CPU scenes, MLP actor-critic
                  (configs/ppo_maniskill_pushcube_mlp.yaml);
- maniskill_balanced: the same with an MLP of 3 x 4096 whose `act` takes about as long as the env step
                  (the workload the hybrid pipeline is for; issue 15 item 4);
- libero_tinyvla: LIBERO-Spatial task 0, 128 px agentview images, the tiny VLA with OpenVLA-style
                  action tokens (configs/grpo_libero_spatial_tinyvla.yaml, run with PPO/GAE collection so
                  the envs keep their episodes across collections instead of resetting every step; long
                  episodes, so no reset falls inside the measurement).

Modes (`cluster.component_placement`, `rollout.pipeline_stages`):
- colocated_k1:      env, rollout, actor on device 0, k = 1 (env and policy alternate);
- hybrid_k2/k4:      the same devices, k = 2 / 4 (the env batch split into k lanes kept in flight);
- disaggregated_k1:  env on device 0, rollout on device 1, actor on device 0, k = 1.
On this GPU-less machine devices are virtual (rlinf.scheduler.cluster): every worker is its own
process in every mode, and the OS shares the 2 cores between them.

What is timed: the runner's own collection phase, `EmbodiedWorkflow.collect(step)` (real env and
rollout workers, the same calls `rlinf.runners.runner.run` makes), after one warm-up collection that
includes the first reset; no PPO update runs (it is not part of collection). Per mode: env steps/s =
N x T x C / collect wall time (median over the repeats), step time = collect wall time / T decisions.
ManiSkill: all four modes' workers live side by side and the measured collections run round-robin, so
load drift hits every mode alike; LIBERO (~1 GB per env) runs the modes one after another.
Diagnostics per decision: env busy / policy busy = time the env ranks spent inside `step` and the
rollout ranks inside `act` (their own timeline spans, all lanes), controller cpu = CPU time of this
driver process (Ray submission, serialisation, the collection loop).

t_env and t_policy: in the colocated k = 1 setup, the full batch's `env.step` alone and the full
batch's `rollout.act` alone, each timed from the controller (one Ray round trip each, as in the
collection loop), T of each after every round, median. Ideal overlap bound = (t_env + t_policy) / max(t_env,
t_policy); efficiency = measured speedup over colocated k = 1 / ideal.

The last line printed is `RESULT {json}`.
"""

import argparse
import contextlib
import json
import logging
import os
import statistics
import time
from typing import Dict, List

import numpy as np

from rlinf.config import load_config
from rlinf.envs import obs as obs_ops
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.workflows.embodied import EmbodiedWorkflow
from rlinf.scheduler import Cluster

# workload: config, overrides, (default envs, decisions per collect), (--quick envs, decisions), interleave modes
WORKLOADS = {
    "maniskill_mlp": ("configs/ppo_maniskill_pushcube_mlp.yaml",
                      ["env.sim_backend=cpu", "env.max_episode_steps=1000"], (32, 32), (8, 8), True),
    # the same simulator with a policy as slow as the env step: MLP 3 x 4096 (actor and critic) on 64 rows,
    # compute-bound (at 16 rows an act costs the same ~70 ms whatever the rows: reading the 400 MB of weights,
    # which every pipeline lane pays again); the case the pipeline is for
    "maniskill_balanced": ("configs/ppo_maniskill_pushcube_mlp.yaml",
                           ["env.sim_backend=cpu", "env.max_episode_steps=1000", "actor.model.hidden_size=6144"],
                           (64, 16), (64, 8), True),
    "libero_tinyvla": ("configs/grpo_libero_spatial_tinyvla.yaml",
                       ["env.image_size=128", "algorithm.adv_estimator=gae", "env.max_episode_steps=1000"],
                       (4, 10), (4, 3), False),
}
MODES = {  # name: (placement, pipeline stages)
    "colocated_k1": ({"actor,rollout,env": 0}, 1),
    "hybrid_k2": ({"actor,rollout,env": 0}, 2),
    "hybrid_k4": ({"actor,rollout,env": 0}, 4),
    "disaggregated_k1": ({"env,actor": 0, "rollout": 1}, 1),
}
NUM_DEVICES = 2


@contextlib.contextmanager
def _no_phase(name: str, group: str = "controller"):
    yield


def _config(workload: str, envs: int, steps: int, stages: int, extra=()):
    config, overrides = WORKLOADS[workload][:2]
    return load_config(config, [*overrides, f"env.num_envs={envs}", f"env.rollout_steps={steps}",
                                f"rollout.pipeline_stages={stages}", f"cluster.num_devices={NUM_DEVICES}",
                                "actor.global_batch_size=null", *extra])


def _shutdown(wf: EmbodiedWorkflow) -> None:
    for group in wf.groups:
        group.shutdown()


def _time_alone(wf: EmbodiedWorkflow, decisions: int) -> Dict[str, List[float]]:
    """Controller-side times of the full batch's `rollout.act` alone and `env.step` alone (stage 0 of a
    k = 1 workflow), `decisions` of each, alternating (the envs move on as in a collection)."""
    obs, E = wf.obs[0], wf.env.size
    t_policy, t_env = [], []
    for _ in range(decisions):
        t0 = time.perf_counter()
        a = wf._act_results(wf._submit_act(obs))
        t_policy.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outs = wf.env.scatter("step", np.split(a["actions"], E), stage=0).wait()
        t_env.append(time.perf_counter() - t0)
        obs = obs_ops.concat([o["obs"] for o in outs])
    wf.obs[0] = obs
    return {"t_policy": t_policy, "t_env": t_env}


def _start(cluster: Cluster, workload: str, mode: str, envs: int, steps: int) -> EmbodiedWorkflow:
    spec, stages = MODES[mode]
    cfg = _config(workload, envs, steps, stages)
    wf = EmbodiedWorkflow(cfg, build_placement(spec, NUM_DEVICES, stages, components_for(cfg)), _no_phase)
    wf.start(cluster)
    wf.collect(0)  # warm-up: first reset, first inference
    return wf


def _busy(events: List[dict], name: str) -> float:
    """Seconds the workers spent inside `name` calls (their own timeline spans)."""
    return sum(e["end"] - e["start"] for e in events if e["name"] == name)


def _rounds(flows: Dict[str, EmbodiedWorkflow], repeats: int, times, busy, loads, alone) -> None:
    """`repeats` collections of every live workflow, round-robin with the order rotating per round; after each
    round, one collection's worth of `_time_alone` on the colocated k = 1 workflow when it is live. `busy`: per
    collection, the seconds the env ranks spent in `step` and the rollout ranks in `act`."""
    names = list(flows)
    for r in range(repeats):
        loads.append(os.getloadavg()[0])
        for mode in names[r % len(names):] + names[:r % len(names)]:
            wf = flows[mode]
            wf.env.pop_events(), wf.rollout.pop_events()  # drop what came before this collection
            cpu0 = time.process_time()
            times[mode].append(wf.collect(1 + r)["time"])
            busy[mode]["controller"].append(time.process_time() - cpu0)
            busy[mode]["env"].append(_busy(wf.env.pop_events(), "step"))
            busy[mode]["policy"].append(_busy(wf.rollout.pop_events(), "act"))
        if "colocated_k1" in flows:
            wf = flows["colocated_k1"]
            for key, vals in _time_alone(wf, wf.cfg.env.rollout_steps // wf.chunk).items():
                alone[key] += vals


def run_workload(workload: str, quick: bool, repeats: int) -> Dict:
    """Interleaved workloads start every mode's workers side by side (idle ones cost memory, not CPU) and run
    the measured collections round-robin, so a load drift hits all modes alike; the others (LIBERO: ~1 GB per
    env) run the modes one after another, each started, warmed up, measured and shut down."""
    _, _, full, small, interleave = WORKLOADS[workload]
    envs, steps = small if quick else full
    cluster = Cluster(_config(workload, envs, steps, 1).cluster)
    flows: Dict[str, EmbodiedWorkflow] = {}
    times: Dict[str, List[float]] = {m: [] for m in MODES}
    busy = {m: {"env": [], "policy": [], "controller": []} for m in MODES}
    loads: List[float] = []
    alone: Dict[str, List[float]] = {"t_policy": [], "t_env": []}
    modes = {}
    try:
        for mode in MODES:
            flows[mode] = _start(cluster, workload, mode, envs, steps)
            modes[mode] = {"placement_mode": flows[mode].placement.mode, "stages": flows[mode].stages}
            if not interleave:
                _rounds({mode: flows[mode]}, repeats, times, busy, loads, alone)
                _shutdown(flows.pop(mode))
        if interleave:
            _rounds(flows, repeats, times, busy, loads, alone)
    finally:
        for wf in flows.values():
            _shutdown(wf)
        cluster.shutdown()
    C = _config(workload, envs, steps, 1).actor.model.action_chunk
    T = steps // C
    t_env, t_pol = statistics.median(alone["t_env"]), statistics.median(alone["t_policy"])
    ideal = (t_env + t_pol) / max(t_env, t_pol)
    for m, r in modes.items():
        t = statistics.median(times[m])
        r.update({"collect_s": times[m], "env_steps_per_s": envs * T * C / t, "step_ms": 1000 * t / T,
                  "env_busy_ms": 1000 * statistics.median(busy[m]["env"]) / T,
                  "policy_busy_ms": 1000 * statistics.median(busy[m]["policy"]) / T,
                  "controller_cpu_ms": 1000 * statistics.median(busy[m]["controller"]) / T})
    base = modes["colocated_k1"]
    for r in modes.values():
        r["speedup"] = r["env_steps_per_s"] / base["env_steps_per_s"]
        r["efficiency_vs_ideal"] = r["speedup"] / ideal
    return {"envs": envs, "decisions_per_collect": T, "action_chunk": C, "repeats": repeats,
            "interleaved": interleave, "t_env_ms": 1000 * t_env, "t_policy_ms": 1000 * t_pol, "ideal": ideal,
            "modes": modes, "load_avg_1m": loads}


def report(workload: str, res: Dict) -> None:
    print(f"\n== {workload}: {res['envs']} envs, {res['decisions_per_collect']} decisions per collection, "
          f"median of {res['repeats']} collections ==")
    print(f"t_env {res['t_env_ms']:.1f} ms, t_policy {res['t_policy_ms']:.1f} ms (full batch, alone): "
          f"ideal overlap bound {res['ideal']:.2f}x; t_env + t_policy = {res['t_env_ms'] + res['t_policy_ms']:.1f} ms")
    print(f"workload wall time (workers started, warmed up, measured, shut down): {res['wall_s']:.0f} s")
    print(f"load average (1 min) at each round: {', '.join(f'{x:.2f}' for x in res['load_avg_1m'])}")
    print(f"{'mode':18s} {'placement':14s} {'env steps/s':>11s} {'step ms':>8s} {'speedup':>8s} {'of ideal':>8s} "
          f"{'env busy':>9s} {'policy busy':>11s} {'controller cpu':>14s}")
    for name, r in res["modes"].items():
        print(f"{name:18s} {r['placement_mode']:14s} {r['env_steps_per_s']:11.1f} {r['step_ms']:8.1f} "
              f"{r['speedup']:8.2f} {100 * r['efficiency_vs_ideal']:7.0f}% {r['env_busy_ms']:6.1f} ms "
              f"{r['policy_busy_ms']:8.1f} ms {r['controller_cpu_ms']:11.1f} ms")
    print("env / policy busy: time per decision the env ranks spent in `step` and the rollout ranks in `act` "
          "(their own spans, all stages); controller cpu: CPU time of the driver process (all its threads) per decision")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embodied_pipeline")
    parser.add_argument("--workload", choices=[*WORKLOADS, "both", "all"], default="both",
                        help="both: maniskill_mlp and libero_tinyvla (simulator-bound); all: the three")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help="measured collections per mode (default 5, quick 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    repeats = args.repeats or (2 if args.quick else 5)
    names: List[str] = {"both": ["maniskill_mlp", "libero_tinyvla"], "all": list(WORKLOADS)}.get(args.workload,
                                                                                                [args.workload])
    results = {}
    for w in names:
        t0 = time.time()
        results[w] = run_workload(w, args.quick, repeats)
        results[w]["wall_s"] = time.time() - t0
        report(w, results[w])
    summary = {w: {"envs": r["envs"], "wall_s": r["wall_s"], "load_avg_1m": r["load_avg_1m"], "t_env_ms": r["t_env_ms"], "t_policy_ms": r["t_policy_ms"],
                   "ideal": r["ideal"],
                   "steps_per_s": {m: r["modes"][m]["env_steps_per_s"] for m in MODES},
                   "step_ms": {m: r["modes"][m]["step_ms"] for m in MODES},
                   "speedup": {m: r["modes"][m]["speedup"] for m in MODES},
                   "efficiency_vs_ideal": {m: r["modes"][m]["efficiency_vs_ideal"] for m in MODES}}
               for w, r in results.items()}
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
