"""Sync vs async (staleness 1, 2) GRPO on the arithmetic recipe with disaggregated placement.

    python -m bench.async_vs_sync [--quick] [--steps N] [key=value ...]   (config overrides for all runs)

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
from rlinf.runners.components import components_for
from rlinf.runners.runner import run

WARMUP = 3


def _run(out: Path, steps: int, overrides, extra=()):
    cfg = load_config("configs/grpo_arith_async.yaml", [
        f"runner.max_steps={steps}", f"runner.output_dir={out}", "runner.progress_bar=false", "runner.log_interval=1",
        "runner.eval_interval=0", "runner.plots=false", *extra, *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run(cfg, placement, out.name)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r][WARMUP:]
    wall = sum(r["time/step_s"] for r in train)
    return {
        "samples_per_s": sum(r["samples"] for r in train) / wall,
        "t_step": statistics.mean(r["time/step_s"] for r in train),
        "t_rollout": statistics.mean(r["time/rollout_s"] + r["time/reward_s"] for r in train),
        "t_train": statistics.mean(r["time/update_s"] for r in train),
        "max_staleness_seen": max(r["staleness/max"] for r in train),
        "reward_curve": [round(r["reward/mean"], 4) for r in rows if "reward/mean" in r],
        "eval_final": summary["eval"]["final"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every run")
    args = parser.parse_args()
    steps = args.steps or (20 if args.quick else 200)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sync"] = _run(Path(tmp) / "sync", steps, ["runner.schedule=sync", "algorithm.max_staleness=0"],
                               args.overrides)
        for s in (1, 2):
            results[f"async_s{s}"] = _run(Path(tmp) / f"async{s}", steps,
                                          ["runner.schedule=async", f"algorithm.max_staleness={s}"], args.overrides)
    sync = results["sync"]
    ideal = sync["t_step"] / max(sync["t_rollout"], sync["t_train"])
    for name, r in results.items():
        speedup = r["samples_per_s"] / sync["samples_per_s"]
        print(f"{name:9s} {r['samples_per_s']:8.1f} samples/s  speedup {speedup:5.2f}  "
              f"max staleness {r['max_staleness_seen']:.0f}  final eval acc {r['eval_final']:.3f}")
        print(f"          reward curve (every step): {r['reward_curve'][:: max(1, steps // 20)]}")
    best = max((k for k in results if k != "sync"), key=lambda k: results[k]["samples_per_s"])
    speedup = results[best]["samples_per_s"] / sync["samples_per_s"]
    result = {
        "steps": steps, "t_step_sync_s": sync["t_step"], "t_rollout_s": sync["t_rollout"], "t_train_s": sync["t_train"],
        "speedup": speedup, "best": best, "ideal": ideal, "efficiency_vs_ideal": speedup / ideal,
        "speedup_s1": results["async_s1"]["samples_per_s"] / sync["samples_per_s"],
        "speedup_s2": results["async_s2"]["samples_per_s"] / sync["samples_per_s"],
        "max_staleness_seen": max(results[k]["max_staleness_seen"] for k in results if k != "sync"),
        "bound": 2,
        "eval_final": {k: r["eval_final"] for k, r in results.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
