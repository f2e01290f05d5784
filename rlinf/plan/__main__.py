"""python -m rlinf.plan --config X [--devices N] [--hardware FILE] [--out plan.yaml] [key=value ...]
python -m rlinf.plan --paper {reasoning_7b,openvla_oft_7b_maniskill} --hardware FILE --devices N [N ...]

Profiles the config's phases on N devices (a few steps in two or three placements, rlinf.plan.profile),
fits the cost model, simulates every candidate plan (rlinf.plan.simulate), prints the ranked table and
writes the best plan as a YAML override (`python -m rlinf.run --config X` then takes it as
`$(python -c ...)`-free dotlist printed below the table, or merge the file). `--paper` plans a published
workload from per-device rates (rlinf.plan.paper) without running anything.

Bad input (unknown key, missing file, a workflow the planner does not model) and a config no plan fits in
memory print one line naming the key and exit 2; nothing is written.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from rlinf.errors import InputError
from rlinf.plan.api import nearest_miss, plan_config, write_plan
from rlinf.plan.hardware import GIB, load_hardware
from rlinf.plan.profile import candidate_overrides, describe, total_envs
from rlinf.plan.simulate import Prediction

logger = logging.getLogger("rlinf.plan")


def table(ranked: List[Prediction], limit: Optional[int] = None, noise_s: float = 0.0) -> str:
    """The ranked table: predicted step time, samples/s, peak memory per device, feasible or why not. A `~`
    marks feasible plans predicted within 2 x noise_s (the profile's step-to-step standard deviation) of the
    first: the profile cannot tell them apart from it."""
    lines = [f"{'#':>3} {'plan':<22} {'mode':<13} {'sched':<5} {'k':>2} {'s':>2} {'step s':>10} "
             f"{'samples/s':>10} {'peak GiB':>9}  feasible"]
    best = ranked[0].step_s if ranked and ranked[0].feasible else None
    for i, p in enumerate(ranked[:limit] if limit else ranked, 1):
        c = p.candidate
        tie = "~" if best is not None and p.feasible and i > 1 and p.step_s - best <= 2 * noise_s else " "
        lines.append(f"{i:>3} {c.name:<22} {c.mode:<13} {c.schedule:<5} {c.pipeline_stages:>2} {c.max_staleness:>2} "
                     f"{tie}{p.step_s:>9.4f} {p.samples_per_s:>10.1f} {p.peak_gib:>9.2f}  "
                     f"{'yes' if p.feasible else 'no: ' + p.why}")
    if noise_s > 0:
        lines.append(f"~: within 2 x {noise_s:.3f} s (the profile's step-to-step standard deviation) of #1")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlinf.plan", description="Plan the placement of an rlinf recipe.")
    p.add_argument("--config", help="YAML recipe, e.g. configs/grpo_arith.yaml")
    p.add_argument("--devices", type=int, nargs="+", default=None,
                   help="devices to plan for (default cluster.num_devices; --paper: several)")
    p.add_argument("--hardware", default=None, help="hardware file (configs/hardware/*.yaml); default: this machine")
    p.add_argument("--out", default="plan.yaml", help="where the best plan's YAML override goes")
    p.add_argument("--steps", type=int, default=6, help="steps of each profile run")
    p.add_argument("--paper", default=None, help="plan a published workload without running it (rlinf.plan.paper)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the config")
    return p


def _paper(args) -> int:
    from rlinf.plan.paper import paper_report

    if not args.hardware:
        raise InputError("--paper needs a hardware file", key="--hardware")
    print(paper_report(args.paper, load_hardware(args.hardware), args.devices or [8, 64, 1024]))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.paper:
            return _paper(args)
        if not args.config:
            raise InputError("a config is required (or --paper)", key="--config")
        if not Path(args.config).is_file():
            raise InputError("config file not found", key=args.config)
        if args.devices and len(args.devices) > 1:
            raise InputError("one device count when profiling a config", key="--devices")
        devices = args.devices[0] if args.devices else None
        w, hw, d, ranked, cfg = plan_config(args.config, args.overrides, devices, args.hardware, steps=args.steps)
        print(describe(w, hw, d))
        print(table(ranked, noise_s=w.step_std_s))
        if not ranked or not ranked[0].feasible:
            raise nearest_miss(ranked, hw, d)
        best = ranked[0]
        envs = total_envs(cfg) if w.kind == "embodied" else 0
        write_plan(Path(args.out), best, d, w.kind, envs)
        print(f"best: {best.candidate.name} ({best.step_s:.3f} s/step predicted, peak {best.peak_gib:.2f} GiB "
              f"of {hw.usable_bytes / GIB:.1f}); written to {args.out}")
        print("run it: python -m rlinf.run --config " + args.config + " " +
              " ".join(f'"{o}"' for o in candidate_overrides(best.candidate, d, w.kind, envs)))
        return 0
    except InputError as e:
        print(f"rlinf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
