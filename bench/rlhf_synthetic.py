"""RLHF on the synthetic preference task, both stages, measured against the hidden gold reward.

    python -m bench.rlhf_synthetic [--quick] [--out DIR]

Stage 1 trains the reward model of configs/rm_synthetic.yaml on noisily labelled pairs (held-out pair
accuracy against gold labels); stage 2 runs the four-model PPO of configs/ppo_rlhf_synthetic.yaml
against it. Every evaluation of stage 2 reports, on held-out prompts, the gold reward (never trained
on), the reward model's raw score and the KL of the policy to the reference; the bench plots gold and
reward-model score against that KL (docs/img/rlhf_synthetic.png: reward-model over-optimisation shows
as the two curves parting) and ends with `RESULT {json}`. Same steps as scripts/rlhf_synthetic.sh.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.run import run_training
from rlinf.workflows import components_for

QUICK_RM = ["runner.max_steps=200", "runner.save_interval=200", "runner.eval_interval=100"]
QUICK_PPO = ["runner.max_steps=250", "runner.eval_interval=50"]


def _run(config: str, out: Path, overrides: Sequence[str]) -> Dict:
    cfg = load_config(config, [f"runner.output_dir={out}", "runner.progress_bar=false", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    return run_training(cfg, placement, Path(config).stem)


def run_stages(out: Path, rm_overrides: Sequence[str] = (), ppo_overrides: Sequence[str] = ()) -> Dict:
    """Train the reward model into out/rm, then PPO against its last checkpoint into out/ppo; returns
    {"rm": summary, "ppo": summary, "rm_seconds": s, "ppo_seconds": s}."""
    t0 = time.time()
    rm = _run("configs/rm_synthetic.yaml", out / "rm", rm_overrides)
    t1 = time.time()
    rm_dir = sorted((out / "rm" / "checkpoints").glob("step_*/reward_model"))[-1]
    ppo = _run("configs/ppo_rlhf_synthetic.yaml", out / "ppo", [f"reward.model.path={rm_dir}", *ppo_overrides])
    return {"rm": rm, "ppo": ppo, "rm_seconds": t1 - t0, "ppo_seconds": time.time() - t1}


def eval_rows(run_dir: Path) -> List[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval/gold_reward" in r]


def plot(rows: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [r["eval/kl"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(kl, [r["eval/gold_reward"] for r in rows], marker="o", label="gold reward (never trained on)")
    ax.plot(kl, [r["eval/rm_reward"] for r in rows], marker="s", label="reward-model score")
    for r in rows:
        ax.annotate(str(r["step"]), (r["eval/kl"], r["eval/gold_reward"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set_xlabel("KL(policy || reference), nats per response (held-out prompts)")
    ax.set_ylabel("mean score, held-out prompts")
    ax.set_title("RLHF on the synthetic task: gold vs proxy reward (labels: step)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 reward-model steps, 250 PPO steps")
    p.add_argument("--out", default=None, help="keep the two runs here (default: a temp dir)")
    p.add_argument("--plot", default="docs/img/rlhf_synthetic.png")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        res = run_stages(out, QUICK_RM if args.quick else (), QUICK_PPO if args.quick else ())
        rows = eval_rows(out / "ppo")
        if not args.quick:
            plot(rows, Path(args.plot))
    start, final = res["ppo"]["eval"]["start"], res["ppo"]["eval"]["final"]
    print("RESULT " + json.dumps({
        "rm_pair_accuracy": res["rm"]["eval"]["final"]["pair_accuracy"],
        "gold_start": start["gold_reward"], "gold_final": final["gold_reward"],
        "gold_gain": final["gold_reward"] - start["gold_reward"],
        "rm_start": start["rm_reward"], "rm_final": final["rm_reward"], "kl_final": final["kl"],
        "curve": [{k: r[k] for k in ("step", "eval/gold_reward", "eval/rm_reward", "eval/kl")} for r in rows],
        "rm_seconds": round(res["rm_seconds"], 1), "ppo_seconds": round(res["ppo_seconds"], 1),
        "quick": args.quick}))


if __name__ == "__main__":
    main()
