"""Cost model: the time of each phase as a function of the devices it runs on. Pure functions; the code
that measures the numbers is rlinf.plan.profile, the code that builds them from published rates is
rlinf.plan.paper.

A phase's time on d devices (`PhaseCost.time`):

    t(d) = serial + work / eff(d) + per_rank x (d - 1)

- serial: what does not shrink with devices (controller round trips, Python per call, the longest sequence);
- work: device-seconds of divisible work (samples, tokens, env steps spread over ranks);
- eff(d): the hardware's parallelism (rlinf.plan.hardware.Hardware.parallelism): d for GPUs, min(d, cores)
  for virtual devices that share a CPU's cores;
- per_rank: cost that grows with ranks (collectives, fan-out).

With three or more measured points (d, t) (`fit_points`: on a CPU machine the profile also runs on as
many devices as cores) t(d) is the piecewise-linear interpolation through them instead.
Fitted from two measurements t1 at d = 1 and tD at d = D (`fit_two_points`):
    tD < t1:   work = (t1 - tD) / (1 - 1 / eff(D)),   serial = t1 - work   (per_rank 0);
    tD >= t1:  serial = t1, per_rank = (tD - t1) / (D - 1)   (work 0: more ranks only cost).

A `Workload` carries the phase costs of one config (per training step unless stated):
- reasoning: generate (whole batch), reward, update (actor + critic + reference forward);
- embodied: env and policy per decision of the whole env batch, `decisions` per step, update per step;
- weight sync: `sync_fixed_s` (colocated hand-off, measured) + weight_bytes / link bandwidth when the
  rollout is on other devices;
- stage_call_s: controller cost of one stage call in the pipelined (k > 1) collection;
- jitter_s: the standard deviation of a step's collection time (async schedules absorb it);
- step_std_s: the standard deviation of the profiled step time (how far apart two plans must be predicted
  for the profile to tell them apart);
- tail_s: the long tail of generation (the longest responses decoding at a small batch) that a sync step
  waits for and a streaming (async) rollout hides behind the next batch's requests;
- switch: colocated / hybrid only, the residency transitions of a step (offload / onload of the training
  state, rlinf.runners.residency), evaluated on all D devices; a measured profile already holds it in
  sync_fixed_s.
"""

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

from rlinf.plan.hardware import Hardware
from rlinf.plan.memory import MemorySpec


@dataclass(frozen=True)
class PhaseCost:
    serial_s: float = 0.0
    work_s: float = 0.0
    per_rank_s: float = 0.0
    points: Tuple[Tuple[int, float], ...] = ()

    def time(self, devices: int, hw: Hardware) -> float:
        """t(d) = serial + work / eff(d) + per_rank x (d - 1); with measured `points` (d, t), three or more,
        the piecewise-linear interpolation through them instead (the last segment extended beyond)."""
        d = max(1, devices)
        if len(self.points) >= 3:
            return _interpolate(self.points, d)
        return self.serial_s + self.work_s / hw.parallelism(d) + self.per_rank_s * (d - 1)

    def busy(self, devices: int, hw: Hardware) -> float:
        """Device-seconds the phase occupies on d devices, every rank busy while it runs: t(d) x eff(d)
        (on shared cores: the core-seconds it takes from the other phases running at the same time)."""
        return self.time(devices, hw) * hw.parallelism(max(1, devices))


def _interpolate(points: Tuple[Tuple[int, float], ...], d: int) -> float:
    """Piecewise-linear t(d) through sorted (d, t) points; constant below the first, the last segment's
    slope beyond the last (never below zero)."""
    pts = sorted(points)
    if d <= pts[0][0]:
        return pts[0][1]
    for (d0, t0), (d1, t1) in zip(pts, pts[1:]):
        if d <= d1 or (d1, t1) == pts[-1]:
            return max(0.0, t0 + (t1 - t0) * (d - d0) / (d1 - d0))
    return pts[-1][1]


def fit_points(times: Dict[int, float], devices: int, hw: Hardware) -> PhaseCost:
    """`fit_two_points` through d = 1 and d = D; with a third measured device count (the core count of a CPU
    machine, where more ranks than cores stop helping) the measured points are kept and interpolated."""
    base = fit_two_points(times[1], times[devices], devices, hw)
    if len(times) < 3:
        return base
    return replace(base, points=tuple(sorted(times.items())))


def fit_two_points(t1: float, t_many: float, devices: int, hw: Hardware) -> PhaseCost:
    """PhaseCost through (1, t1) and (D, tD). A phase that got faster: work = (t1 - tD) / (1 - 1/eff(D)),
    serial = t1 - work (work capped at t1). A phase that got slower with more ranks (collectives, processes
    sharing cores): serial = t1, per_rank = (tD - t1) / (D - 1), linear in the rank count."""
    eff = hw.parallelism(devices)
    if devices <= 1:
        return PhaseCost(serial_s=max(0.0, t1))
    if t_many >= t1 or eff <= 1.0:
        return PhaseCost(serial_s=max(0.0, t1), per_rank_s=max(0.0, t_many - t1) / (devices - 1))
    work = min((t1 - t_many) / (1.0 - 1.0 / eff), t1)
    return PhaseCost(serial_s=max(0.0, t1 - work), work_s=work)


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # reasoning | embodied
    samples_per_step: int
    update: PhaseCost
    generate: PhaseCost = field(default_factory=PhaseCost)
    reward: PhaseCost = field(default_factory=PhaseCost)
    env: PhaseCost = field(default_factory=PhaseCost)
    decisions: int = 1
    sync_fixed_s: float = 0.0
    weight_bytes: float = 0.0
    stage_call_s: float = 0.0
    jitter_s: float = 0.0
    step_std_s: float = 0.0
    async_overhead_s: float = 0.0
    tail_s: float = 0.0
    switch: PhaseCost = field(default_factory=PhaseCost)
    memory: Optional[MemorySpec] = None
    max_stages: int = 4


def weight_sync_s(w: Workload, hw: Hardware, separate: bool, total_devices: int) -> float:
    """sync_fixed + (weight_bytes / link_bandwidth(D) when the rollout sits on other devices, else 0)."""
    if not separate or w.weight_bytes <= 0:
        return w.sync_fixed_s
    return w.sync_fixed_s + w.weight_bytes / hw.link_bandwidth(total_devices)
