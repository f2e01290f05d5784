"""YAML + dotlist overrides -> validated `RLinfConfig`.

Every failure raises `ConfigError` naming the key path (or file) and, for unknown keys, the
closest valid name. Values are parsed as YAML scalars; nothing is evaluated as code.
"""

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlinf.config.schema import RLinfConfig
from rlinf.errors import ConfigError

_KEY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[\w,\-]+)*$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"duplicate key (first on line {seen[key]}, again on line {line})", key=str(key))
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads "1e-4" as a string; accept the exponent forms people write for learning rates.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"),
)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from `path`; every problem becomes a `ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found" if not path.exists() else "not a file", key=str(path))
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as e:
        raise ConfigError(f"{e} in {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"malformed YAML{where}: {problem}", key=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a mapping of sections, got {type(data).__name__}", key=str(path))
    return data


def parse_overrides(overrides: Iterable[str]) -> dict:
    """`["a.b=1", "c=x"]` -> nested dict. Values are YAML scalars/flow collections."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like key.path=value, got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _KEY_RE.match(key):
            raise ConfigError(f"malformed override key '{key}' (expected dotted names like runner.max_steps)")
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"cannot parse value '{raw}'", key=key) from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("conflicting overrides", key=key)
        node[parts[-1]] = value
    return tree


def _check_keys(data: Any, cls: type, prefix: str = "") -> None:
    """Unknown keys -> ConfigError with a close-match suggestion. Free-form dict fields are skipped."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__} '{data}'", key=prefix.rstrip(".") or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown key{hint}", key=path)
        ftype = fields[key].type
        if dataclasses.is_dataclass(ftype):
            if value is None:
                raise ConfigError("section cannot be null", key=path)
            _check_keys(value, ftype, path + ".")


def _mapping_fields(cls: type, prefix: str = "") -> set:
    """Paths of free-form mapping fields (e.g. cluster.component_placement)."""
    out = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            out |= _mapping_fields(f.type, f"{prefix}{f.name}.")
        elif getattr(f.type, "__origin__", None) is dict:
            out.add(prefix + f.name)
    return out


def _merge(base: dict, extra: dict, replace: set, prefix: str = "") -> dict:
    """Deep merge; a mapping given whole for a free-form mapping field replaces the old one."""
    out = dict(base)
    for k, v in extra.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(out.get(k), dict) and path not in replace:
            out[k] = _merge(out[k], v, replace, path + ".")
        else:
            out[k] = v
    return out


def _check_constraints(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_constraints(value, path + ".")
            continue
        if value is None:
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            close = difflib.get_close_matches(str(value), meta["choices"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"must be one of {meta['choices']}, got '{value}'{hint}", key=path)
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"must be >= {meta['min']}, got {value}", key=path)
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"must be <= {meta['max']}, got {value}", key=path)


def _check_lora(cfg: RLinfConfig) -> None:
    """LoRA adapters exist for the VLA policies only."""
    for section, model in (("actor", cfg.actor.model), ("critic", cfg.critic.model)):
        if model.lora_rank and model.kind != "vla":
            raise ConfigError(f"LoRA is implemented for actor.model.kind vla only, got kind '{model.kind}'; "
                              f"set {section}.model.lora_rank=0", key=f"{section}.model.lora_rank")


def _check_early_stop(cfg: RLinfConfig) -> None:
    """runner.stop_metric / stop_value come together, need periodic evaluations and a metric the run reports."""
    run = cfg.runner
    if (run.stop_metric is None) != (run.stop_value is None):
        missing = "runner.stop_value" if run.stop_value is None else "runner.stop_metric"
        raise ConfigError(f"early stopping needs runner.stop_metric and runner.stop_value together; set {missing}",
                          key=missing)
    if run.stop_metric is None:
        return
    if not run.eval_interval:
        raise ConfigError("early stopping checks the periodic evaluations; set runner.eval_interval > 0",
                          key="runner.eval_interval")
    if cfg.env.id is None:
        allowed = ("accuracy", "reward")
    else:
        allowed = ("return", "length") + (("success_rate",) if cfg.env.simulator in ("maniskill", "libero") else ())
    if run.stop_metric not in allowed:
        raise ConfigError(f"this run's evaluation reports {', '.join(allowed)}, not '{run.stop_metric}'",
                          key="runner.stop_metric")


def build_config(data: dict, overrides: Iterable[str] = ()) -> RLinfConfig:
    """Merge `data` (a parsed YAML mapping) and dotlist `overrides` onto the schema and validate."""
    merged = _merge(data, parse_overrides(overrides), _mapping_fields(RLinfConfig))
    _check_keys(merged, RLinfConfig)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RLinfConfig), OmegaConf.create(merged))
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or None
        msg = getattr(e, "msg", None) or str(e)
        first = msg.splitlines()[0]
        raise ConfigError(f"invalid value: {first}", key=key) from None
    _check_constraints(obj)
    _check_lora(obj)
    _check_early_stop(obj)
    return obj


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RLinfConfig:
    """Load, override and validate a config file. Raises `ConfigError` on any problem."""
    return build_config(read_yaml(path), overrides)


def to_yaml(cfg: RLinfConfig) -> str:
    """The resolved config as YAML (what a run writes to config.yaml)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
