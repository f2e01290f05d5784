"""The planner as functions: profile a config, rank its candidate plans, write the best as a YAML override,
and expand `cluster.component_placement: auto` (the hook rlinf.run calls before it loads the config).

    overrides = expand_auto(config_path, overrides)   # unchanged unless the placement is `auto`
    cfg = load_config(config_path, overrides)
"""

import logging
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from rlinf.config import RLinfConfig, load_config
from rlinf.config.loader import parse_overrides, read_yaml
from rlinf.errors import InputError
from rlinf.plan.cost_model import Workload
from rlinf.plan.hardware import Hardware, load_hardware, local_hardware
from rlinf.plan.profile import candidate_overrides, plan_overrides, profile, total_envs, workload_kind
from rlinf.plan.simulate import Prediction, plan

logger = logging.getLogger(__name__)

KEY = "cluster.component_placement"
AUTO = "auto"


def extra_components(cfg: RLinfConfig) -> Tuple[str, ...]:
    """Components that follow the actor's devices in every candidate (critic, reference)."""
    return tuple(n for n, on in (("critic", cfg.critic.enabled), ("reference", cfg.algorithm.kl_coef > 0)) if on)


def is_auto(config_path: str, overrides: Sequence[str]) -> bool:
    """True when the YAML or an override sets cluster.component_placement to `auto`."""
    raw = read_yaml(config_path)
    value = (raw.get("cluster") or {}).get("component_placement")
    over = parse_overrides([o for o in overrides if o.startswith(KEY + "=")])
    if over:
        value = over["cluster"]["component_placement"]
    return isinstance(value, str) and value.strip().lower() == AUTO


def load_for_planning(config_path: str, overrides: Sequence[str]) -> Tuple[RLinfConfig, List[str]]:
    """The config with an `auto` placement replaced by an empty one (every component on all devices) for
    profiling; returns (config, the overrides used)."""
    over = list(overrides)
    if is_auto(config_path, over):
        over = [o for o in over if not o.startswith(KEY + "=")] + [f"{KEY}={{}}"]
    return load_config(config_path, over), over


def nearest_miss(ranked: List[Prediction], hw: Hardware, devices: int) -> InputError:
    """The exit-2 error of a config no candidate fits: names the key and the candidate that misses least."""
    miss = min(ranked, key=lambda p: p.peak_gib)
    return InputError(f"no plan fits in memory on {devices} devices of {hw.name}: nearest miss {miss.candidate.name} "
                      f"needs {miss.peak_gib:.1f} GiB per device, {hw.usable_bytes / 2 ** 30:.1f} GiB usable "
                      f"(hardware device_memory_gib x (1 - memory_reserve))", key=KEY)


def plan_yaml(p: Prediction, devices: int, kind: str, envs: int) -> Dict:
    """The best plan as a nested YAML override (the schema's keys)."""
    c = p.candidate
    out: Dict = {"cluster": {"num_devices": devices, "component_placement": dict(c.placement)},
                 "rollout": {"pipeline_stages": c.pipeline_stages},
                 "runner": {"schedule": c.schedule},
                 "algorithm": {"max_staleness": c.max_staleness}}
    if kind == "embodied":
        out["env"] = {"num_envs": max(1, envs // c.rollout_devices)}
    return out


def plan_config(config_path: str, overrides: Sequence[str], devices: Optional[int] = None,
                hardware: Optional[str] = None, steps: int = 6, work_dir: Optional[str] = None,
                timeout_s: float = 600.0) -> Tuple[Workload, Hardware, int, List[Prediction], RLinfConfig]:
    """Profile the config on `devices` (default cluster.num_devices) and rank every candidate."""
    cfg, over = load_for_planning(config_path, overrides)
    workload_kind(cfg)  # the workflows the planner models, else exit 2 before any run
    d = devices or cfg.cluster.num_devices
    if d < 1:
        raise InputError("need at least one device", key="--devices")
    hw = load_hardware(hardware) if hardware else local_hardware(d)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        w = profile(config_path, cfg, over, d, hw, Path(tmp), steps=steps, timeout_s=timeout_s)
    ranked = plan(w, hw, d, extra_components(cfg))
    return w, hw, d, ranked, cfg


def expand_auto(config_path: str, overrides: Sequence[str], steps: int = 4) -> List[str]:
    """`cluster.component_placement: auto` -> the overrides of the best plan (profiled now, on
    cluster.num_devices); other configs' overrides come back unchanged. Raises InputError (exit 2) when no
    plan fits in memory."""
    if not is_auto(config_path, overrides):
        return list(overrides)
    w, hw, d, ranked, cfg = plan_config(config_path, overrides, steps=steps)
    if not ranked or not ranked[0].feasible:
        raise nearest_miss(ranked, hw, d)
    best = ranked[0]
    envs = total_envs(cfg) if w.kind == "embodied" else 0
    logger.info("component_placement auto: %s (predicted %.3f s/step)", best.candidate.name, best.step_s)
    kept = [o for o in overrides if not o.startswith(KEY + "=")]
    return kept + candidate_overrides(best.candidate, d, w.kind, envs)


def resumed_plan(config_path: str, overrides: Sequence[str], run_dir: Path) -> List[str]:
    """`auto` on `--resume`: the plan the run directory ran with (its newest config file: `config.yaml` or
    the latest `config.from-step-N.yaml`), not a new profile whose choice could differ from the checkpoint's
    layout. Other configs' overrides come back unchanged."""
    if not is_auto(config_path, overrides):
        return list(overrides)
    run_dir = Path(run_dir)
    if (run_dir / "COMPLETE").exists():  # a checkpoint directory: <run>/checkpoints/step_N
        run_dir = run_dir.parent.parent
    later = sorted(run_dir.glob("config.from-step-*.yaml"), key=lambda f: int(f.stem.rsplit("-", 1)[1]))
    newest = later[-1] if later else run_dir / "config.yaml"
    if not newest.exists():
        raise InputError("no config.yaml to take the planned placement from", key=str(run_dir))
    ran = yaml.safe_load(newest.read_text())
    kept = [o for o in overrides if not o.startswith(KEY + "=")]
    return kept + plan_overrides(ran["cluster"]["num_devices"], ran["cluster"]["component_placement"],
                                 ran["rollout"]["pipeline_stages"], ran["runner"]["schedule"],
                                 ran["algorithm"]["max_staleness"], (ran.get("env") or {}).get("num_envs"))


def write_plan(path: Path, p: Prediction, devices: int, kind: str, envs: int) -> None:
    header = (f"# rlinf.plan: {p.candidate.name}, predicted {p.step_s:.3f} s/step, {p.samples_per_s:.1f} samples/s, "
              f"peak {p.peak_gib:.2f} GiB per device\n")
    path.write_text(header + yaml.safe_dump(plan_yaml(p, devices, kind, envs), sort_keys=False))
