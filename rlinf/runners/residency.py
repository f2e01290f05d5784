"""Residency: which groups hold their state on the devices in which phase (colocated placement).

Who owns which transition (one owner each, as in NeMo-RL's weight-sync interface):

- The SCHEDULE decides. Before each phase it calls `Residency.enter(phase, groups)`; nothing else in
  rlinf offloads or onloads. The sync schedule enters `sync_weights`, then `collect`, then `train` in
  every step; the runner asks it for `evaluate` before each evaluation.
- WORKERS carry out the transition they are told, and only that: `offload()` moves their parameters,
  gradients and optimizer state off the device (FSDP2 / DeepSpeed training groups: to host memory;
  vLLM: `sleep(level=1)`), `onload()` brings them back bit-exact (vLLM: `wake_up`). They never decide
  to move by themselves.
- The PLAN below is pure: from the placement, the groups that may offload and who is resident now,
  `plan_transition` returns who leaves and who comes back for a phase.

Phases and the groups they need on their devices (`PHASE_NEEDS`):

    sync_weights   actor, rollout                    (the actor's weights go to the rollout)
    collect        rollout, reward, env              (generate / simulate and score)
    train          actor, critic, reference          (reference log-probs, values, updates)
    evaluate       actor, rollout, reward, env,      (sync, greedy generation; the reference for
                   reference                          the KL of the policy to it)

Rule: a group that may offload, is resident, is not needed in the phase and shares a device with a
group that is needed leaves first (so the device has room), then every needed group that is not
resident comes back. A group on devices of its own is never moved: nothing else needs its memory.
Groups that may offload: the actor and the reference (`actor.offload`), the critic
(`critic.offload`), the rollout (`rollout.offload`; the transformers engine's weights are bound to
the resharding engine's views, so only vLLM's sleep / wake frees memory there).
"""

import logging
from typing import Dict, Iterable, List, Mapping, Sequence, Set, Tuple

logger = logging.getLogger(__name__)

PHASE_NEEDS: Dict[str, Set[str]] = {
    "sync_weights": {"actor", "rollout"},
    "collect": {"rollout", "reward", "env"},
    "train": {"actor", "critic", "reference"},
    "evaluate": {"actor", "rollout", "reward", "env", "reference"},
}


def plan_transition(devices: Mapping[str, Sequence[int]], offloadable: Set[str], resident: Set[str],
                    phase: str) -> Tuple[List[str], List[str]]:
    """(groups to offload, groups to onload) before `phase`, by the rule in the module docstring.
    `devices` lists the groups that run and their devices; `resident` is who is on the device now."""
    if phase not in PHASE_NEEDS:
        raise ValueError(f"unknown phase '{phase}' (known: {', '.join(PHASE_NEEDS)})")
    needed = PHASE_NEEDS[phase] & set(devices)
    busy = {d for name in needed for d in devices[name]}
    leave = sorted(name for name in resident & offloadable
                   if name not in needed and busy & set(devices[name]))
    come = sorted(name for name in needed if name not in resident)
    return leave, come


class Residency:
    """The schedule's record of who is resident, and the calls that move groups (see module docstring)."""

    def __init__(self, devices: Mapping[str, Sequence[int]], offloadable: Iterable[str]):
        self.devices = {name: list(d) for name, d in devices.items()}
        self.offloadable = set(offloadable) & set(self.devices)
        self.resident: Set[str] = set(self.devices)  # every group starts with its state on its devices
        self.transitions: List[Tuple[str, str, str]] = []  # (phase, "offload" | "onload", group), in order

    @property
    def active(self) -> bool:
        """False when no group may offload: then `enter` never calls a worker."""
        return bool(self.offloadable)

    def enter(self, phase: str, groups: Iterable) -> None:
        """Offload, then onload (each group's ranks at once, every call bounded by the group's timeout)."""
        if not self.active:
            return
        leave, come = plan_transition(self.devices, self.offloadable, self.resident, phase)
        by_name = {g.name: g for g in groups}
        for kind, names in (("offload", leave), ("onload", come)):
            handles = [by_name[name].call(kind) for name in names if name in by_name]
            for handle in handles:
                handle.wait()
            for name in names:
                self.transitions.append((phase, kind, name))
                if kind == "offload":
                    self.resident.discard(name)
                else:
                    self.resident.add(name)
        if leave or come:
            logger.debug("residency before %s: offloaded %s, onloaded %s", phase, leave, come)
