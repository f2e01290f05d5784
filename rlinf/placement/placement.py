"""`cluster.component_placement` -> `Placement`: which devices each component's ranks run on, and the mode.

Grammar of a value: `all`, an int `3`, a range `0-3`, a list `0,2,5` or a mix `0-1,4`; YAML lists of
those work too. A key names one component or several separated by commas (`"actor,rollout": all`).
Each component gets one rank per device of its set, rank i on the i-th device in ascending order.

Mode (what the runner's schedule keys on):
- hybrid:        env and rollout share devices and `rollout.pipeline_stages > 1` (the env batch is split
                 into stages; simulation of stage i+1 overlaps inference on stage i);
- colocated:     actor and rollout share devices (phases time-share them, offloading in between);
- disaggregated: actor and rollout are on disjoint devices (phases run concurrently);
- single:        the workflow starts no rollout (reward-model training, SFT): one training group, nothing
                 to time-share or overlap.
Which components must be placed follows from the components the workflow starts (`components`, see
rlinf.workflows.components_for): the actor always, the rollout when the workflow runs one.
Any two device sets must be equal, disjoint, or nested (a component spanning the devices of others
time-shares with them). A partial overlap defines no mode and is rejected, as is anything else this
module cannot realise, before any worker starts.
"""

import difflib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

from rlinf.errors import PlacementError

COMPONENTS = ("actor", "critic", "reference", "rollout", "env", "reward")
REQUIRED = ("actor", "rollout")
KEY = "cluster.component_placement"

_PART_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_devices(spec: Any, num_devices: int, key: str = KEY) -> List[int]:
    """Parse one placement value into a sorted list of distinct device indices in [0, num_devices)."""
    if isinstance(spec, bool) or spec is None:
        raise PlacementError(f"expected devices like 0-3, '0,2' or all, got {spec!r}", key=key)
    if isinstance(spec, int):
        parts: List[str] = [str(spec)]
    elif isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(num_devices))
        parts = spec.split(",")
    elif isinstance(spec, (list, tuple)) or hasattr(spec, "__iter__"):
        parts = [str(p) for p in spec]
    else:
        raise PlacementError(f"expected devices like 0-3, '0,2' or all, got {spec!r}", key=key)
    devices: set = set()
    for part in parts:
        m = _PART_RE.match(part)
        if not m:
            raise PlacementError(f"cannot parse device spec {part.strip()!r} (expected N, A-B, a list, or all)", key=key)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise PlacementError(f"reversed range {lo}-{hi}", key=key)
        if hi >= num_devices:
            raise PlacementError(
                f"device {hi} out of range: cluster.num_devices is {num_devices} (valid 0-{num_devices - 1})", key=key
            )
        devices.update(range(lo, hi + 1))
    if not devices:
        raise PlacementError("component has no devices", key=key)
    return sorted(devices)


@dataclass(frozen=True)
class Placement:
    """Devices per component and the inferred mode."""

    devices: Dict[str, List[int]]
    mode: str
    num_devices: int
    pipeline_stages: int = 1

    def ranks(self, component: str) -> List[tuple]:
        """[(rank, device)] for `component`."""
        return list(enumerate(self.devices[component]))

    def world_size(self, component: str) -> int:
        return len(self.devices[component])

    def process_count(self) -> int:
        """Worker processes the plan starts: one per rank of every component."""
        return sum(len(devs) for devs in self.devices.values())

    def shares_devices(self, a: str, b: str) -> bool:
        return bool(set(self.devices[a]) & set(self.devices[b]))

    def describe(self) -> str:
        """Human-readable plan: one line per component plus the mode."""
        lines = [f"mode: {self.mode} (num_devices={self.num_devices}, pipeline_stages={self.pipeline_stages})"]
        for comp in COMPONENTS:
            if comp in self.devices:
                pairs = ", ".join(f"rank {r}->dev {d}" for r, d in self.ranks(comp))
                lines.append(f"  {comp:<9} {_compact(self.devices[comp]):<8} [{pairs}]")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"mode": self.mode, "num_devices": self.num_devices, "pipeline_stages": self.pipeline_stages,
                "components": {c: list(d) for c, d in self.devices.items()}}


def _compact(devs: List[int]) -> str:
    if devs == list(range(devs[0], devs[-1] + 1)):
        return f"{devs[0]}-{devs[-1]}" if len(devs) > 1 else str(devs[0])
    return ",".join(map(str, devs))


def _component_names(key: str) -> List[str]:
    names = [n.strip() for n in str(key).split(",")]
    for name in names:
        if name not in COMPONENTS:
            close = difflib.get_close_matches(name, COMPONENTS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known components: {', '.join(COMPONENTS)}"
            raise PlacementError(f"unknown component '{name}'{hint}", key=f"{KEY}.{key}")
    return names


def required_components(components: tuple) -> List[str]:
    """The components a placement must name (or cover with its default): the actor always (every
    workflow trains one group on it), the rollout whenever the workflow starts one."""
    return ["actor"] + [n for n in REQUIRED if n != "actor" and n in components]


def build_placement(
    component_placement: Mapping[str, Any],
    num_devices: int,
    pipeline_stages: int = 1,
    components: tuple = ("actor", "rollout", "reward"),
) -> Placement:
    """Validate the placement and infer the mode. `components` lists what the recipe runs.

    An empty placement puts every component on all devices. Components the recipe runs but the
    placement does not name share the actor's devices; components it names but the recipe does not run
    are validated, then left out of the plan.
    """
    if num_devices < 1:
        raise PlacementError(f"need at least one device, got {num_devices}", key="cluster.num_devices")
    spec = dict(component_placement) if component_placement else {",".join(components): "all"}
    devices: Dict[str, List[int]] = {}
    for key, value in spec.items():
        for name in _component_names(key):
            if name in devices:
                raise PlacementError(f"component '{name}' is placed twice", key=f"{KEY}.{key}")
            devices[name] = parse_devices(value, num_devices, key=f"{KEY}.{key}")
    # A component the recipe does not run (a disabled critic, a reward scored in the rollout ranks) starts
    # no process: its placement is checked above, then left out.
    devices = {name: devs for name, devs in devices.items() if name in components}
    for name in required_components(components):
        if name not in devices:
            raise PlacementError(f"component '{name}' has no devices (add '{name}: <devices>')", key=KEY)
    for name in components:
        devices.setdefault(name, list(devices["actor"]))

    names = sorted(devices)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = set(devices[a]), set(devices[b])
            if sa & sb and not (sa <= sb or sb <= sa):
                raise PlacementError(
                    f"'{a}' on {_compact(devices[a])} and '{b}' on {_compact(devices[b])} partially overlap; "
                    "device sets must be equal (colocated), disjoint (disaggregated) or nested",
                    key=KEY,
                )

    if pipeline_stages > 1 and "env" not in devices:
        raise PlacementError("pipeline_stages > 1 needs an env component to pipeline against",
                             key="rollout.pipeline_stages")
    sets = {n: set(d) for n, d in devices.items()}
    if "rollout" not in sets:
        mode = "single"
    elif "env" in sets and sets["env"] & sets["rollout"] and pipeline_stages > 1:
        mode = "hybrid"
    elif sets["actor"] & sets["rollout"]:
        mode = "colocated"
    else:
        mode = "disaggregated"
    return Placement(devices=devices, mode=mode, num_devices=num_devices, pipeline_stages=pipeline_stages)
