"""Generate docs/configuration.md from the schema: `python -m rlinf.config.docs > docs/configuration.md`."""

import dataclasses
import sys

from rlinf.config.schema import RLinfConfig


def _type_name(tp) -> str:
    name = getattr(tp, "__name__", None) or str(tp)
    return str(tp).replace("typing.", "") if "[" in str(tp) else name


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    value = f.default_factory()  # type: ignore[misc]
    return repr(value) if not dataclasses.is_dataclass(value) else "(section)"


def _rows(cls, prefix: str):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            yield from _rows(f.type, f"{prefix}{f.name}.")
            continue
        meta = f.metadata
        limits = []
        if "choices" in meta:
            limits.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
        if "min" in meta:
            limits.append(f">= {meta['min']}")
        if "max" in meta:
            limits.append(f"<= {meta['max']}")
        help_text = meta.get("help", "") + (f" ({'; '.join(limits)})" if limits else "")
        yield f"| `{prefix}{f.name}` | {_type_name(f.type)} | `{_default(f)}` | {help_text} |"


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from `rlinf/config/schema.py` by `python -m rlinf.config.docs`; do not edit by hand.",
             "Set keys in a YAML recipe or override them on the command line: "
             "`python -m rlinf.run --config configs/X.yaml section.key=value`.", ""]
    for section in dataclasses.fields(RLinfConfig):
        lines += [f"## `{section.name}`", "", section.metadata.get("help", ""), "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += list(_rows(section.type, f"{section.name}."))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
