"""Schedules: when rollouts happen relative to updates. The runner's loop is the same for all.

A schedule implements `start(workflow)`, `next_batch(workflow, step) -> batch`,
`after_update(workflow, step)` and `stop(workflow)`; the workflow supplies `sync_weights()`,
`collect(step)`, `train(batch)` and `evaluate()`.
"""

from rlinf.config import RLinfConfig
from rlinf.errors import InputError
from rlinf.placement import Placement


class SyncSchedule:
    """On-policy: sync weights, generate and score the step's prompts, then train on them."""

    name = "sync"

    def start(self, workflow) -> None:
        pass

    def next_batch(self, workflow, step: int):
        workflow.sync_weights()
        return workflow.collect(step)

    def after_update(self, workflow, step: int) -> None:
        pass

    def stop(self, workflow) -> None:
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
