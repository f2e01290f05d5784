"""Start-up: from the command to the first training step, and what of it is rlinf's own overhead.

    python -m bench.startup [--quick] [--config configs/grpo_arith.yaml] [key=value ...]

Runs the recipe in this process for one step and splits the time before the first step (from the
runner's own phase events, absolute times) into:

    imports        importing rlinf.run, the runner and the workflow (torch, Ray, transformers)
    cluster        Cluster(): Ray start (embedded) and device discovery
    start_workers  the workflow's start(): worker processes launched side by side, their imports,
                   model builds, process groups, FSDP2 sharding, the resharding engine's set-up
    eval_at_start  the evaluation before training (work, not overhead: excluded)
    other          run directory, schedule start

`overhead_s` = time to the first step - eval_at_start - model_build_s, where model_build_s is the
time to build the recipe's models once in this process (the part of start_workers that is model
construction; workers build theirs in parallel, so this is an upper bound of what they spend on it).
Issue 15's goal is overhead_s <= 5 s on the default recipe. `--quick` skips the model-build timing.
The last line printed is `RESULT {json}`.
"""

import argparse
import json
import tempfile
import time


def main() -> None:
    t_cmd = time.time()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/grpo_arith.yaml")
    p.add_argument("--quick", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    from rlinf.config import load_config
    from rlinf.placement import build_placement
    from rlinf.runners.runner import Runner
    from rlinf.workflows import components_for, make_workflow

    t_imports = time.time() - t_cmd
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, ["runner.max_steps=1", "runner.eval_interval=0", "runner.progress_bar=false",
                                        "runner.plots=false", f"runner.output_dir={tmp}/run", *args.overrides])
        placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                    cfg.rollout.pipeline_stages, components_for(cfg))
        runner = Runner(cfg, placement, make_workflow, "startup")
        try:
            t0 = time.time()
            runner.start()
            t_started = time.time()
            runner.fit()
        finally:
            runner.close()
    events = {e["name"]: e for e in runner.events if e["group"] == "controller"}
    first_step = min(e["start"] for e in runner.events if e["name"] == "step")
    evaluate = [e for e in runner.events if e["name"] == "evaluate" and e["start"] < first_step]
    eval_s = sum(e["end"] - e["start"] for e in evaluate)
    model_build_s = 0.0 if args.quick else _model_build_seconds(cfg)
    to_first_step = first_step - t_cmd
    result = {
        "config": args.config, "to_first_step_s": round(to_first_step, 2), "imports_s": round(t_imports, 2),
        "cluster_s": round(events["start_workers"]["start"] - t0, 2),
        "start_workers_s": round(events["start_workers"]["end"] - events["start_workers"]["start"], 2),
        "eval_at_start_s": round(eval_s, 2), "other_s": round(first_step - t_started - eval_s, 2),
        "model_build_s": round(model_build_s, 2),
        "overhead_s": round(to_first_step - eval_s - model_build_s, 2), "goal_s": 5.0, "quick": args.quick,
    }
    print("RESULT " + json.dumps(result))


def _model_build_seconds(cfg) -> float:
    """Seconds to build the recipe's trained and generating models once here (tokenizer included)."""
    import transformers  # noqa: F401  (its import is start-up overhead, not model building)

    from rlinf.models.causal_lm import build_causal_lm
    from rlinf.models.tokenizer import load_tokenizer

    t = time.time()
    tok = load_tokenizer(cfg.actor.model.path, cfg.actor.model.char_vocab)
    build_causal_lm(cfg.actor.model, len(tok), seed=cfg.runner.seed)
    return time.time() - t


if __name__ == "__main__":
    main()
