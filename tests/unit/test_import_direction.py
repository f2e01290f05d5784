"""Imports point one way (../shared/DESIGN.md, "Dependency direction"): the runner knows a workflow by its
interface only, the runtime knows no RL, the algorithms are pure tensor maths. Scanned from the source
(every `import` and `from ... import`, at any depth of a module), so a lazy import is caught too."""

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PKG = Path(__file__).resolve().parents[2] / "rlinf"

# part -> parts of rlinf it must not import
FORBIDDEN: Dict[str, Set[str]] = {
    "runners": {"workflows", "workers", "models", "envs", "algorithms"},
    "workflows": {"runners"},
    "workers": {"runners", "workflows"},
    "scheduler": {"runners", "workflows", "workers", "models", "envs", "algorithms", "reshard"},
    "placement": {"runners", "workflows", "workers", "models", "envs", "algorithms", "reshard", "scheduler"},
    "channel": {"runners", "workflows", "workers", "models", "envs", "algorithms", "reshard"},
    "algorithms": {"runners", "workflows", "workers", "models", "envs", "reshard", "scheduler", "channel"},
    "config": {"runners", "workflows", "workers", "models", "envs", "algorithms", "reshard", "scheduler"},
}


def _imported_parts(path: Path) -> List[str]:
    parts = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        parts += [n.split(".")[1] for n in names if n.startswith("rlinf.") and n.count(".") >= 1]
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_imports_nothing_above_it(part):
    wrong = [f"{path.relative_to(PKG.parent)} imports rlinf.{imported}"
             for path in sorted((PKG / part).rglob("*.py"))
             for imported in _imported_parts(path) if imported in FORBIDDEN[part]]
    assert not wrong, "\n".join(wrong)


def test_algorithms_do_not_import_ray():
    for path in (PKG / "algorithms").rglob("*.py"):
        tree = ast.parse(path.read_text())
        mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        mods += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not any(m == "ray" or m.startswith("ray.") for m in mods), path


def test_the_scan_sees_a_lazy_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from rlinf.workflows.reasoning import X\n    import rlinf.runners.runner\n")
    assert _imported_parts(f) == ["workflows", "runners"]
