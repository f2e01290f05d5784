"""Controller overhead: the time inside a training step when no worker group is busy, off the run's timeline.

    python -m bench.controller [--quick] [--steps N] [--pushcube-steps M] [--no-pushcube]

Runs two recipes as `python -m rlinf.run` subprocesses (timeline on, plots and TensorBoard off) and reads
their `timeline.json`:

  default   configs/grpo_arith.yaml, N steps (default 500, quick 100)
  pushcube  configs/ppo_maniskill_pushcube_mlp.yaml, M steps (default 8, quick 4): ManiSkill3 on CPU is
            slow, so only a few of the recipe's 250 steps; evaluation episodes cut to one batch of envs

Per step (the controller's `step` phase; the first step, warm-up, left out): its wall time, the union of
every worker event inside it (at least one group busy), and idle = wall - busy: the controller's own work
(prompt encoding, decoding, batch building, advantages), its dispatch of calls and the runtime's latency
in returning them (rlinf.utils.timeline.step_overhead). `fraction` = idle / wall, median over steps
(also the mean, the pooled sum idle / sum wall, and `loop`: pooled from one step's start to the next,
which adds the loop's logging between steps). The table of gaps names each idle interval by the worker
phase that ended before it and the one that started after it, so it shows where the controller time goes.
Issue 15's goal: overhead_fraction <= 0.05 on both. The last line printed is `RESULT {json}`.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlinf.utils.timeline import idle_by_neighbours, overhead_summary, read_timeline, step_overhead

logger = logging.getLogger("bench.controller")

QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=true"]
WORKLOADS = {
    "default": ("configs/grpo_arith.yaml", ["runner.eval_interval=0"]),
    "pushcube": ("configs/ppo_maniskill_pushcube_mlp.yaml", ["runner.eval_interval=0", "env.eval_episodes=32"]),
}
GOAL = 0.05
TOP_GAPS = 6


def run_recipe(name: str, steps: int, out: Path) -> tuple:
    """Run the workload's recipe for `steps` steps; returns (timeline events, seconds of the command)."""
    config, extra = WORKLOADS[name]
    cmd = [sys.executable, "-m", "rlinf.run", "--config", config, "--log-level", "WARNING", *QUIET, *extra,
           f"runner.max_steps={steps}", f"runner.output_dir={out}"]
    logger.info("%s: %s", name, " ".join(cmd[1:]))
    t0 = time.time()
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
                          capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{name}: rlinf.run exited with {proc.returncode}")
    return read_timeline(out / "timeline.json"), wall


def measure(name: str, steps: int, tmp: Path) -> dict:
    events, wall = run_recipe(name, steps, tmp / name)
    rows = step_overhead(events)
    summary = overhead_summary(rows)
    gaps = idle_by_neighbours(events, rows)
    return {"name": name, "summary": summary, "gaps": gaps, "command_s": wall, "steps_run": steps}


def print_report(results: list) -> None:
    print(f"{'workload':<10} {'steps':>5} {'step ms':>9} {'busy ms':>9} {'idle ms':>8} {'median':>7} "
          f"{'mean':>6} {'pooled':>7} {'loop':>6}")
    for r in results:
        s = r["summary"]
        print(f"{r['name']:<10} {s['steps']:>5} {s['step_s'] * 1e3:>9.1f} {s['busy_s'] * 1e3:>9.1f} "
              f"{s['idle_s'] * 1e3:>8.2f} {s['median_fraction']:>7.3f} {s['mean_fraction']:>6.3f} "
              f"{s['pooled_fraction']:>7.3f} {s['loop_fraction'] or 0:>6.3f}")
    for r in results:
        total_idle = sum(g[3] for g in r["gaps"]) or 1e-12
        n = r["summary"]["steps"]
        print(f"\n{r['name']}: where the idle time goes (gap between the phase before and the phase after)")
        print(f"  {'before':<26} {'after':<26} {'gaps':>5} {'ms/step':>8} {'share':>6}")
        for before, after, count, seconds in r["gaps"][:TOP_GAPS]:
            print(f"  {before:<26} {after:<26} {count:>5} {seconds / n * 1e3:>8.2f} {seconds / total_idle:>6.1%}")


def _entry(r: dict) -> dict:
    s = r["summary"]
    return {"median": round(s["median_fraction"], 4), "mean": round(s["mean_fraction"], 4),
            "pooled": round(s["pooled_fraction"], 4), "loop": round(s["loop_fraction"] or 0.0, 4),
            "steps_measured": s["steps"], "step_ms": round(s["step_s"] * 1e3, 2),
            "idle_ms": round(s["idle_s"] * 1e3, 2),
            "command_s": round(r["command_s"], 1),
            "top_gaps": [f"{b} -> {a}: {sec / s['steps'] * 1e3:.2f} ms/step" for b, a, _, sec in r["gaps"][:3]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 default-recipe steps, 4 PushCube steps")
    p.add_argument("--steps", type=int, default=None, help="default-recipe steps (default 500, quick 100)")
    p.add_argument("--pushcube-steps", type=int, default=None, help="PushCube steps (default 8, quick 4)")
    p.add_argument("--no-pushcube", action="store_true", help="only the default recipe")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plan = [("default", args.steps or (100 if args.quick else 500))]
    if not args.no_pushcube:
        plan.append(("pushcube", args.pushcube_steps or (4 if args.quick else 8)))
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(name, steps, Path(tmp)) for name, steps in plan]
    print_report(results)
    by_name = {r["name"]: r for r in results}
    result = {"bench": "controller", "overhead_fraction": round(by_name["default"]["summary"]["median_fraction"], 4)}
    if "pushcube" in by_name:
        result["overhead_fraction_pushcube"] = round(by_name["pushcube"]["summary"]["median_fraction"], 4)
    result.update({name: _entry(r) for name, r in by_name.items()})
    result.update({"goal": GOAL, "quick": args.quick})
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
