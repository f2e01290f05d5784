"""The planner checked against measurement: predicted vs measured step time of candidate plans on 4 virtual devices.

    python -m bench.planner [--quick] [--workload grpo|cartpole|both] [--steps N] [--keep DIR | --refit DIR] [key=value ...]

Workloads (cluster.num_devices=4, every run `python -m rlinf.run` in a subprocess, rlinf.plan.profile.run_config):
  grpo      configs/grpo_arith.yaml with a larger model (hidden 256, 4 layers) and 6 new tokens per sample, so
            that its phases take >= 0.3 s on this machine;
  cartpole  configs/ppo_cartpole_mlp.yaml (embodied PPO, MLP actor-critic, 32 envs x 64 steps in every plan:
            env.num_envs per rank = 32 / env ranks; splits whose ranks do not divide 32 envs or the 512-sample
            minibatch are infeasible, which leaves 2+2 as the only split on 4 devices).

Per workload: the planner's profile runs (rlinf.plan.profile: colocated on device 0, on devices 0-1 (this
machine's 2 cores), on all 4 devices, and for the embodied one hybrid k = 2) fit the cost model; every candidate is predicted
(rlinf.plan.simulate); then the candidates of the measured set are run for N steps each (the profile's
all-device runs are the colocated / hybrid_k2 measurements; the planner's own choice is always measured).
Measured step time = median of `time/step_s` in metrics.jsonl after 2 warm-up steps.

Reported per workload: Spearman rank correlation of predicted vs measured step time over the measured
candidates (ties get their mean rank) and regret = measured(chosen plan) / min(measured) - 1.
The last line printed is `RESULT {"spearman_min": ..., "regret_max": ..., ...}` (goal: >= 0.8, <= 0.10).
"""

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from rlinf.config import load_config
from rlinf.plan.hardware import local_hardware
from rlinf.plan.profile import (WARMUP, candidate_overrides, fit_workload, mid_devices, profile_runs, run_config,
                                total_envs, train_rows, workload_kind)
from rlinf.plan.simulate import plan
from rlinf.utils.timeline import read_timeline

logger = logging.getLogger("bench.planner")
DEVICES = 4
WORKLOADS = {
    "grpo": ("configs/grpo_arith.yaml",
             ["actor.model.hidden_size=256", "actor.model.num_layers=4", "rollout.max_new_tokens=6",
              "data.eval_size=8"],
             ["disagg_2+2", "async_s1_2+2", "disagg_1+3", "async_s1_1+3", "async_s2_2+2"]),
    "cartpole": ("configs/ppo_cartpole_mlp.yaml", [],
                 ["hybrid_k4", "disagg_2+2", "async_s1_2+2", "async_s2_2+2"]),
}
PROFILED = {"all": "colocated", "k2": "hybrid_k2"}


def ranks(values: Sequence[float]) -> List[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation of the ranks of a and b."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    sa = sum((x - ma) ** 2 for x in ra) ** 0.5
    sb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (sa * sb) if sa and sb else 0.0


def step_s(rows: List[dict], samples: float) -> float:
    """Median step time after the warm-up, scaled to `samples` per step (an embodied split whose env ranks do
    not divide the env batch runs a slightly smaller one: 3 ranks x 10 envs for 32)."""
    return statistics.median(r["time/step_s"] * samples / r.get("samples", samples) for r in train_rows(rows, WARMUP))


def _saved(work: Path, name: str) -> Dict[str, List[dict]]:
    """Metrics rows of the runs kept under work/name (--refit): run directory name -> rows."""
    out = {}
    for d in sorted((work / name).iterdir()):
        if (d / "metrics.jsonl").exists():
            out[d.name] = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return out


def run_workload(name: str, steps: int, quick: bool, work: Path, refit: bool = False, extra=()) -> Dict:
    """Profile, predict, measure (or with `refit`, read the runs a previous --keep left in `work`); `extra`
    overrides go to every run of the workload."""
    config, base, subset = WORKLOADS[name]
    base = [*base, *extra]
    cfg = load_config(config, base)
    kind = workload_kind(cfg)
    envs = total_envs(cfg) if kind == "embodied" else 0
    hw = local_hardware(DEVICES)
    t0 = time.time()
    if refit:
        saved = _saved(work, name)
        runs = {k[len("profile_"):]: (rows, read_timeline(work / name / k / "timeline.json"))
                for k, rows in saved.items() if k.startswith("profile_")}
    else:
        runs = profile_runs(config, base, kind, DEVICES, envs, steps, work / name, 600, mid_devices(hw, DEVICES))
    w = fit_workload(config, cfg, runs, DEVICES, hw, mid_devices(hw, DEVICES))
    ranked = plan(w, hw, DEVICES)
    preds = {p.candidate.name: p for p in ranked}
    measured = {PROFILED[k]: step_s(rows, w.samples_per_step) for k, (rows, _) in runs.items() if k in PROFILED}
    chosen = ranked[0].candidate.name
    if refit:
        measured.update({k: step_s(rows, w.samples_per_step) for k, rows in saved.items() if not k.startswith("profile_")})
    todo = (subset if quick else [p.candidate.name for p in ranked if p.feasible])
    todo = [n for n in dict.fromkeys([chosen, *todo]) if n not in measured and not refit]
    failed = {}
    for cand in todo:
        c = preds[cand].candidate
        try:
            rows, _ = run_config(config, [*base, *candidate_overrides(c, DEVICES, kind, envs),
                                          f"runner.max_steps={steps}"], work / name / cand, timeout_s=600)
        except RuntimeError as e:  # a plan rlinf refuses or that crashes: reported, not scored
            failed[cand] = str(e)
            logger.warning("%s %s: %s", name, cand, e)
            continue
        measured[cand] = step_s(rows, w.samples_per_step)
        logger.info("%s %s: measured %.3f s, predicted %.3f s", name, cand, measured[cand], preds[cand].step_s)
    if chosen not in measured:  # refit chose a plan no kept run measured: regret against what was measured
        chosen = min(measured, key=lambda n: preds[n].step_s)
    names = sorted(measured, key=lambda n: preds[n].step_s)
    rho = spearman([preds[n].step_s for n in names], [measured[n] for n in names])
    best = min(measured.values())
    noise = w.step_std_s
    ties = [n for n in names if preds[n].step_s - preds[chosen].step_s <= 2 * noise]
    return {"noise_s": round(noise, 4), "within_noise_of_chosen": ties,"workload": name, "config": config, "overrides": base, "names": names, "chosen": chosen,
            "predicted": {n: round(preds[n].step_s, 4) for n in names},
            "measured": {n: round(measured[n], 4) for n in names},
            "spearman": round(rho, 3), "regret": round(measured[chosen] / best - 1.0, 3),
            "best_measured": min(measured, key=measured.get), "failed": failed, "wall_s": round(time.time() - t0, 1),
            "fitted": {"generate": vars(w.generate), "env": vars(w.env), "update": vars(w.update),
                       "sync_fixed_s": w.sync_fixed_s, "stage_call_s": w.stage_call_s, "jitter_s": w.jitter_s}}


def report(r: Dict) -> None:
    print(f"\n== {r['workload']}: {r['config']} {' '.join(r['overrides'])} (4 virtual devices) ==")
    print(f"{'plan':<16} {'predicted s':>11} {'measured s':>11}")
    for n in r["names"]:
        mark = "  <- chosen" if n == r["chosen"] else ""
        print(f"{n:<16} {r['predicted'][n]:>11.3f} {r['measured'][n]:>11.3f}{mark}")
    print(f"spearman {r['spearman']:.3f}, regret {r['regret']:.1%} (best measured: {r['best_measured']}), "
          f"wall {r['wall_s']:.0f} s")
    print(f"predicted within 2 x {r['noise_s']:.3f} s (profile step std) of the chosen plan: "
          f"{', '.join(r['within_noise_of_chosen'])}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.planner")
    p.add_argument("--quick", action="store_true", help="6 plans per workload, 6 steps each")
    p.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 10, quick 6)")
    p.add_argument("--keep", default=None, help="keep every run's directory under this folder")
    p.add_argument("--refit", default=None, help="run nothing: refit and score the runs a --keep left in this folder")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (one workload at a time)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    steps = args.steps or (6 if args.quick else 10)
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    t0 = time.time()
    if args.refit or args.keep:
        work = Path(args.refit or args.keep)
        work.mkdir(parents=True, exist_ok=True)
        results = [run_workload(n, steps, args.quick, work, bool(args.refit), args.overrides) for n in names
                   if not args.refit or (work / n).is_dir()]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = [run_workload(n, steps, args.quick, Path(tmp), False, args.overrides) for n in names]
    for r in results:
        report(r)
    out = {"bench": "planner", "spearman_min": min(r["spearman"] for r in results),
           "regret_max": max(r["regret"] for r in results),
           **{f"spearman_{r['workload']}": r["spearman"] for r in results},
           **{f"regret_{r['workload']}": r["regret"] for r in results},
           "plans_measured": {r["workload"]: len(r["names"]) for r in results},
           "chosen": {r["workload"]: r["chosen"] for r in results},
           "within_noise_of_chosen": {r["workload"]: len(r["within_noise_of_chosen"]) for r in results},
           "steps": steps, "quick": args.quick, "refit": bool(args.refit), "wall_s": round(time.time() - t0, 1),
           "detail": {r["workload"]: {"predicted": r["predicted"], "measured": r["measured"], "fitted": r["fitted"]}
                      for r in results}}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
