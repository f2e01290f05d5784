"""Sync vs async (staleness 1, 2) with disaggregated placement: GRPO on the arithmetic recipe
(`--workload grpo_arith`, default) or embodied PPO on CartPole with an MLP (`--workload cartpole_mlp`).

    python -m bench.async_vs_sync [--workload W] [--quick] [--steps N] [key=value ...]   (overrides for all runs)

Throughput is samples per second of training-loop wall time (first 3 steps excluded as warm-up).
The ideal overlap bound comes from the sync run's own phase times: a sync step costs t_step
(rollout + reward + update + weight sync); with perfect overlap a step costs only the longer of
rollout (+ reward) and update, so ideal = t_step / max(t_rollout, t_train) and
efficiency = speedup / ideal.
The last line printed is `RESULT {json}`.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

WARMUP = 3
# workload: (config, default steps, --quick steps, reward curve metric, final eval metric, sync-only overrides)
WORKLOADS = {
    "grpo_arith": ("configs/grpo_arith_async.yaml", 200, 20, "reward/mean", "accuracy", []),
    # the sync baseline is the sync recipe: no decoupled PPO
    "cartpole_mlp": ("configs/ppo_cartpole_mlp_async.yaml", 150, 20, "env/return", "return",
                     ["algorithm.off_policy_correction=none"]),
}


def _run(workload: str, out: Path, steps: int, overrides, extra=()):
    config, _, _, curve_key, eval_key, _ = WORKLOADS[workload]
    cfg = load_config(config, [
        f"runner.max_steps={steps}", f"runner.output_dir={out}", "runner.progress_bar=false", "runner.log_interval=1",
        "runner.eval_interval=0", "runner.plots=false", *extra, *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, out.name)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r][WARMUP:]
    wall = sum(r["time/step_s"] for r in train)
    return {
        "samples_per_s": sum(r["samples"] for r in train) / wall,
        "t_step": statistics.mean(r["time/step_s"] for r in train),
        "t_rollout": statistics.mean(r["time/rollout_s"] + r.get("time/reward_s", 0.0) for r in train),
        "t_train": statistics.mean(r["time/update_s"] for r in train),
        "max_staleness_seen": max(r["staleness/max"] for r in train),
        "reward_curve": [round(r[curve_key], 4) for r in rows if curve_key in r],
        "eval_final": summary["eval"]["final"][eval_key],
        "wall_time_s": summary["wall_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="grpo_arith")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    args = parser.parse_args()
    w = args.workload
    _, full_steps, quick_steps, _, eval_key, sync_only = WORKLOADS[w]
    steps = args.steps or (quick_steps if args.quick else full_steps)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sync"] = _run(w, Path(tmp) / "sync", steps,
                               ["runner.schedule=sync", "algorithm.max_staleness=0", *sync_only], args.overrides)
        for s in (1, 2):
            results[f"async_s{s}"] = _run(w, Path(tmp) / f"async{s}", steps,
                                          ["runner.schedule=async", f"algorithm.max_staleness={s}"], args.overrides)
    sync = results["sync"]
    ideal = sync["t_step"] / max(sync["t_rollout"], sync["t_train"])
    for name, r in results.items():
        speedup = r["samples_per_s"] / sync["samples_per_s"]
        print(f"{name:9s} {r['samples_per_s']:8.1f} samples/s  speedup {speedup:5.2f}  "
              f"max staleness {r['max_staleness_seen']:.0f}  final eval {eval_key} {r['eval_final']:.3f}  "
              f"wall {r['wall_time_s']:.1f} s")
        print(f"          reward curve (every step): {r['reward_curve'][:: max(1, steps // 20)]}")
    best = max((k for k in results if k != "sync"), key=lambda k: results[k]["samples_per_s"])
    speedup = results[best]["samples_per_s"] / sync["samples_per_s"]
    result = {
        "workload": w, "steps": steps, "t_step_sync_s": sync["t_step"], "t_rollout_s": sync["t_rollout"], "t_train_s": sync["t_train"],
        "speedup": speedup, "best": best, "ideal": ideal, "efficiency_vs_ideal": speedup / ideal,
        "speedup_s1": results["async_s1"]["samples_per_s"] / sync["samples_per_s"],
        "speedup_s2": results["async_s2"]["samples_per_s"] / sync["samples_per_s"],
        "max_staleness_seen": max(results[k]["max_staleness_seen"] for k in results if k != "sync"),
        "bound": 2,
        "eval_final": {k: r["eval_final"] for k, r in results.items()}, "eval_metric": eval_key,
        "wall_time_s": {k: r["wall_time_s"] for k, r in results.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
