"""Command line: python -m rlinf.run --config configs/X.yaml [--dry-run | --print-config] [--resume DIR] key=value ...

Bad input of any kind (unknown key, wrong type, impossible placement, missing file, and what only workers
would read: LIBERO task ids, gymnasium spaces, model directories; see rlinf.preflight) prints one line
naming the problem and exits with code 2 before anything is started or written.
"""

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from rlinf.config import RLinfConfig, load_config, to_yaml
from rlinf.errors import InputError, RunFailure
from rlinf.placement import Placement, build_placement
from rlinf.preflight import preflight
from rlinf.workflows import WORKFLOWS, components_for, workflow_name

logger = logging.getLogger(__name__)


def run_training(cfg: RLinfConfig, placement: Placement, config_name: str = "run", resume: Optional[str] = None) -> Dict:
    """The runner's loop with the config's workflow (`runner.workflow`, see rlinf.workflows).

    Ray starts in this (the main) thread while a second thread imports the runner's modules: Ray's start
    (~3 s here) is mostly waiting for its services, the imports (~2 s, torch) are work, so the two
    overlap (`Cluster(while_starting=...)`). Ray starts in the main thread because its SIGTERM handler,
    which runs the cleanup, can only be installed there."""
    from rlinf.scheduler.cluster import Cluster  # Ray without torch (rlinf.scheduler loads lazily)

    modules = ("rlinf.runners.runner", WORKFLOWS[workflow_name(cfg)][0])  # torch, the workflow and its workers
    cluster = Cluster(cfg.cluster, workers=placement.process_count(), while_starting=lambda: _import_modules(modules))
    try:
        from rlinf.runners.runner import run
        from rlinf.workflows import make_workflow
    except BaseException:
        cluster.shutdown()
        raise
    return run(cfg, placement, make_workflow, config_name, resume, cluster=cluster)


def _import_modules(names: Sequence[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # the main thread's own import of it reports the error
            logger.debug("background import of %s failed", name, exc_info=True)
            return


def _planned(config: str, overrides: List[str], resume: Optional[str]) -> List[str]:
    """`cluster.component_placement: auto`: the overrides of the planner's best plan (rlinf.plan profiles the
    config now, a few short runs); a resumed run keeps the plan its run directory ran with. Other configs'
    overrides come back unchanged."""
    from rlinf.plan.api import expand_auto, is_auto, resumed_plan

    if not is_auto(config, overrides):
        return overrides
    if resume is not None:
        return resumed_plan(config, overrides, Path(resume))
    return expand_auto(config, overrides)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlinf.run", description="Run an rlinf training recipe.")
    p.add_argument("--config", required=True, help="YAML recipe, e.g. configs/grpo_arith.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and placement plan, then exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML, then exit")
    p.add_argument("--resume", metavar="DIR", default=None, help="continue a run from its checkpoint directory")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. runner.max_steps=5")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, _planned(args.config, args.overrides, args.resume))
        placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                    cfg.rollout.pipeline_stages, components=components_for(cfg))
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        if args.dry_run:
            print(to_yaml(cfg), end="")
            print("# placement plan")
            print(placement.describe())
            return 0
        # What workers would read (LIBERO task ids, gymnasium spaces, model directories), checked here:
        # before the cluster starts and before a run directory exists.
        preflight(cfg)
        if args.resume is not None and not Path(args.resume).is_dir():
            raise InputError("checkpoint directory not found", key=args.resume)
        run_training(cfg, placement, config_name=Path(args.config).stem, resume=args.resume)
        return 0
    except InputError as e:
        print(f"rlinf: error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:  # restarts exhausted (runner.max_restarts)
        print(f"rlinf: run failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
