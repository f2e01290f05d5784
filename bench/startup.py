"""Start-up: from the command to the first training step, and what of it is rlinf's own overhead.

    python -m bench.startup [--quick] [--runs N] [--config configs/grpo_arith.yaml] [key=value ...]

Runs `python -m rlinf.run --config ... runner.max_steps=1 runner.eval_interval=0` as a subprocess,
`--runs` times (default 3; `--quick`: 1), and reads the run's `timeline.json` (event times count from
its `origin_unix_s`) against the Unix time just before the subprocess started:

    before_workers  process start, the controller's imports and Ray's start (they overlap: Ray starts
                    while a second thread imports torch and the runner, see rlinf.run.run_training)
    start_workers   the workflow's start(): worker processes (Ray's ahead-of-time ones where it has
                    them), their imports, model builds, process groups, FSDP2, the resharding engine
    eval_at_start   the evaluation before training (work, not overhead: excluded)
    to_first_step   the command to the first `step` event

`model_build_s` is measured once in a fresh process of its own (torch already imported): importing
transformers' model classes and building the recipe's models and tokenizer. It is the part of
start-up that is model building, not rlinf; the workers do it side by side, so this is an upper
bound of what they spend on it. `overhead_s` = median to_first_step - eval_at_start - model_build_s.
Issue 15's goal is overhead_s <= 5 s on the default recipe. The last line printed is `RESULT {json}`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlinf.utils.timeline import read_timeline, timeline_origin

RUN_OVERRIDES = ["runner.max_steps=1", "runner.eval_interval=0", "runner.progress_bar=false", "runner.plots=false",
                 "runner.save_interval=0"]
MODEL_BUILD = """
import sys, time
import torch  # noqa: F401  (the workers' torch import is not model building)
from rlinf.config import load_config
cfg = load_config(sys.argv[1], sys.argv[2:])
t = time.time()
from rlinf.models.causal_lm import build_causal_lm
from rlinf.models.tokenizer import load_tokenizer
tok = load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab)
build_causal_lm(cfg.actor.model, len(tok), seed=cfg.runner.seed)
print(time.time() - t)
"""


def one_run(config: str, overrides: list, timeout_s: float) -> dict:
    """Time one `python -m rlinf.run` from the command to its first training step."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "rlinf.run", "--config", config, "--log-level", "WARNING", *RUN_OVERRIDES,
               f"runner.output_dir={tmp}/run", *overrides]
        t_cmd = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        timeline = Path(tmp) / "run" / "timeline.json"
        origin = timeline_origin(timeline)
        events = [e for e in read_timeline(timeline) if e["group"] == "controller"]
    first_step = min(e["start"] for e in events if e["name"] == "step")
    workers = next(e for e in events if e["name"] == "start_workers")
    eval_s = sum(e["end"] - e["start"] for e in events if e["name"] == "evaluate" and e["start"] < first_step)
    return {"to_first_step_s": round(origin + first_step - t_cmd, 2),
            "before_workers_s": round(origin + workers["start"] - t_cmd, 2),
            "start_workers_s": round(workers["end"] - workers["start"], 2),
            "eval_at_start_s": round(eval_s, 2)}


def model_build_seconds(config: str, overrides: list, timeout_s: float) -> float:
    proc = subprocess.run([sys.executable, "-c", MODEL_BUILD, config, *overrides], capture_output=True, text=True,
                          timeout=timeout_s, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/grpo_arith.yaml")
    p.add_argument("--quick", action="store_true", help="one run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs = [one_run(args.config, args.overrides, args.timeout) for _ in range(1 if args.quick else args.runs)]
    for i, r in enumerate(runs):
        print(f"run {i + 1}: " + "  ".join(f"{k} {v}" for k, v in r.items()), flush=True)
    model_build_s = model_build_seconds(args.config, args.overrides, args.timeout)
    median = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    result = {"config": args.config, "runs": len(runs), **median, "model_build_s": round(model_build_s, 2),
              "overhead_s": round(median["to_first_step_s"] - median["eval_at_start_s"] - model_build_s, 2),
              "to_first_step_all_s": [r["to_first_step_s"] for r in runs], "goal_s": 5.0, "quick": args.quick}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
