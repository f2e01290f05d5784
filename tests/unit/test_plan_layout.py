"""rlinf.plan sits at the top (next to rlinf.run): nothing in rlinf but rlinf.run (the `auto` placement) imports it, and its modelling modules are
pure (no Ray, no subprocess, no torch): only rlinf.plan.profile runs anything."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "rlinf"
PURE = ("hardware.py", "memory.py", "cost_model.py", "simulate.py", "paper.py")


def _modules(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_nothing_below_imports_the_planner():
    wrong = [str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
             if "plan" not in p.relative_to(PKG).parts[:1] and p != PKG / "run.py"
             and any(m == "rlinf.plan" or m.startswith("rlinf.plan.") for m in _modules(p))]
    assert not wrong, wrong


def test_modelling_modules_are_pure():
    for name in PURE:
        mods = set(_modules(PKG / "plan" / name))
        bad = {m for m in mods if m.split(".")[0] in ("ray", "subprocess", "torch")
               or m.startswith("rlinf.plan.profile") or m.startswith("rlinf.scheduler")}
        assert not bad, (name, bad)


def test_files_and_functions_stay_small():
    for path in (PKG / "plan").glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 600, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, (path, node.name)
