"""Schedules: when rollouts happen relative to updates. The runner's loop is the same for all.

A schedule implements `start(runner)`, `next_batch(runner, step) -> rollout`,
`after_update(runner, step)` and `stop(runner)`.
"""

from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import Placement


class SyncSchedule:
    """On-policy: sync weights, generate and score the step's prompts, then train on them."""

    name = "sync"

    def start(self, runner) -> None:
        pass

    def next_batch(self, runner, step: int):
        runner.sync_weights()
        samples = runner.prompts_for_step(step)
        return runner.generate(samples, runner.cfg.algorithm.group_size, seed=runner.cfg.runner.seed + step)

    def after_update(self, runner, step: int) -> None:
        pass

    def stop(self, runner) -> None:
        pass


SCHEDULES = {"sync": SyncSchedule}


def make_schedule(cfg: RLinfConfig, placement: Placement):
    name = cfg.runner.schedule
    if name == "auto":
        name = "sync" if cfg.algorithm.max_staleness == 0 else "async"
    if name not in SCHEDULES:
        raise InputError(f"schedule '{name}' is not available yet (available: {', '.join(SCHEDULES)})",
                         key="runner.schedule")
    return SCHEDULES[name]()
