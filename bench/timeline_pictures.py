"""Timeline pictures of the placement modes for README / BENCHMARKS: `python -m bench.timeline_pictures`.

Runs 8 steps of the arithmetic recipe with a larger model (hidden 256, 4 layers) colocated (sync, one
device), disaggregated (sync, actor and rollout on separate devices) and async (staleness 1), and
draws the last steps' phases per worker to docs/img/timeline_<mode>.png.
"""

import json
import tempfile
from pathlib import Path

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training
from rlinf.utils.plots import plot_timeline

MODEL = ["actor.model.hidden_size=256", "actor.model.num_layers=4", "data.batch_size=64", "runner.max_steps=8",
         "runner.eval_interval=0", "runner.progress_bar=false", "runner.plots=false", "data.eval_size=16"]
MODES = {
    "colocated": ("configs/grpo_arith.yaml", []),
    "disaggregated": ("configs/grpo_arith_async.yaml", ["runner.schedule=sync", "algorithm.max_staleness=0"]),
    "async": ("configs/grpo_arith_async.yaml", []),
}


def events_from_trace(path: Path):
    trace = json.loads(path.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M"}
    return [{"group": names[e["pid"]], "rank": e["tid"], "name": e["name"], "start": e["ts"] / 1e6,
             "end": (e["ts"] + e["dur"]) / 1e6} for e in trace if e["ph"] == "X"]


def main() -> None:
    out_dir = Path("docs/img")
    out_dir.mkdir(parents=True, exist_ok=True)
    for mode, (config, extra) in MODES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(config, [*MODEL, *extra, f"runner.output_dir={tmp}"])
            placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1,
                                        components_for(cfg))
            run_training(cfg, placement, mode)
            events = [e for e in events_from_trace(Path(tmp) / "timeline.json")
                      if e["name"] not in ("step", "start_workers", "evaluate", "_rlinf_ping")]
        steps = sorted(e["start"] for e in events if e["name"] == "update")
        window = (steps[-4] - 0.05, steps[-1] + (steps[-1] - steps[-2]) + 0.05)
        plot_timeline(events, out_dir / f"timeline_{mode}.png", title=f"{mode}: last 3 steps ({placement.mode} placement)",
                      window=tuple(w - min(e["start"] for e in events) for w in window))
        print(f"wrote docs/img/timeline_{mode}.png")


if __name__ == "__main__":
    main()
