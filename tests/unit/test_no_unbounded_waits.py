"""Every wait in the library has a deadline: an AST scan of rlinf/ for blocking calls without a timeout.

Flagged (each must name a timeout, and not `None`):
- `ray.get(...)`, `ray.wait(...)`, `asyncio.wait(...)` without `timeout=`;
- `x.wait()` (threading.Event / Condition, torch Work, Popen, ...), `x.wait_for(pred)` (Condition),
  `x.join()` (Thread, Process), `x.get()` / `x.get(block=True)` (queue), `x.result()` (futures),
  `x.acquire()` (locks), `x.communicate()`, without a timeout argument;
- `subprocess.run/call/check_call/check_output(...)` without `timeout=`;
- a deadline that is no deadline: `timedelta(days=N)` (N >= 1) or a literal timeout over a day.

Not flagged: `.wait()` of a `GroupHandle` (its default is the group's `cluster.wait_timeout_s`), found by
a small local inference: the receiver is `group.call(...)` / `group.scatter(...)` / `_call_raw(...)`, a
function of the same module that returns one, or a name bound from any of these (also through
containers, loops, unpacking and arguments of a same-module function); and awaitables passed to
`asyncio.wait_for(aw, timeout)` or awaited inside `async with asyncio.timeout(...)`.
"""

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "rlinf"

HANDLE_FACTORIES = {"call", "scatter", "_call_raw", "GroupHandle", "_UntimedHandle"}
SUBPROCESS = {"run", "call", "check_call", "check_output"}


def _name(node: ast.AST) -> Optional[str]:
    """Last name of a call target: `a.b.c` -> 'c', `f` -> 'f'."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _timeout_kw(call: ast.Call) -> Optional[ast.expr]:
    for kw in call.keywords:
        if kw.arg == "timeout":
            return kw.value
    return None


def _is_none(node: Optional[ast.expr]) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _bounded_kw(call: ast.Call) -> bool:
    value = _timeout_kw(call)
    return value is not None and not _is_none(value)


def _bounded_first(call: ast.Call, position: int = 0) -> bool:
    """A timeout given as keyword, or as positional argument `position` (not None)."""
    if _bounded_kw(call):
        return True
    return len(call.args) > position and not _is_none(call.args[position])


class _Module:
    """Which functions of a module return group handles, and which of their parameters receive them."""

    def __init__(self, tree: ast.Module):
        self.functions: Dict[str, List[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)
        self.returns_handle: Set[str] = set()
        self.handle_params: Dict[str, Set[str]] = {}
        for _ in range(4):  # to a fixpoint (tiny modules: a few rounds suffice)
            for fns in self.functions.values():
                for fn in fns:
                    names = self.handle_names(fn)
                    if any(isinstance(n, ast.Return) and n.value is not None and self.is_handle(n.value, names)
                           for n in ast.walk(fn)):
                        self.returns_handle.add(fn.name)
                    self._mark_params(fn, names)

    def _params(self, fn) -> List[str]:
        args = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        static = any(_name(d) == "staticmethod" for d in fn.decorator_list)
        return args[1:] if args and args[0] in ("self", "cls") and not static else args

    def _mark_params(self, fn, names: Set[str]) -> None:
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            callee = _name(call.func)
            for target in self.functions.get(callee, []):
                params = self._params(target)
                for i, arg in enumerate(call.args):
                    if i < len(params) and self.is_handle(arg, names):
                        self.handle_params.setdefault(target.name, set()).add(params[i])
                for kw in call.keywords:
                    if kw.arg and self.is_handle(kw.value, names):
                        self.handle_params.setdefault(target.name, set()).add(kw.arg)

    def is_handle(self, node: ast.AST, names: Set[str]) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and _name(sub.func) in (HANDLE_FACTORIES | self.returns_handle):
                return True
            if isinstance(sub, ast.Name) and sub.id in names:
                return True
        return False

    def handle_names(self, fn) -> Set[str]:
        names = set(self.handle_params.get(fn.name, set()))
        for arg in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
            if arg.annotation is not None and "GroupHandle" in ast.unparse(arg.annotation):
                names.add(arg.arg)
        for _ in range(4):
            before = len(names)
            for node in ast.walk(fn):
                pairs = []
                if isinstance(node, ast.Assign):
                    pairs = [(t, node.value) for t in node.targets]
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                    pairs = [(node.target, node.value)]
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                    pairs = [(node.target, node.iter)]
                elif isinstance(node, ast.NamedExpr):
                    pairs = [(node.target, node.value)]
                for target, value in pairs:
                    if self.is_handle(value, names):
                        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            if len(names) == before:
                break
        return names


def _bounded_context(parents: List[ast.AST], call: ast.Call) -> bool:
    """Inside `asyncio.wait_for(<here>, timeout)` or an `async with asyncio.timeout(t)` block."""
    for parent in parents:
        if isinstance(parent, ast.Call) and _dotted(parent.func).endswith("wait_for") and parent.args \
                and any(sub is call for sub in ast.walk(parent.args[0])) and _bounded_first(parent, 1):
            return True
        if isinstance(parent, ast.AsyncWith) and any(
                isinstance(item.context_expr, ast.Call) and _name(item.context_expr.func) == "timeout"
                and _bounded_first(item.context_expr) for item in parent.items):
            return True
    return False


DAY_S = 86400


def _huge(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and node.value > DAY_S


def _problem(call: ast.Call, module: _Module, handle_names: Set[str], parents: List[ast.AST]) -> Optional[str]:
    func = call.func
    if _name(func) == "timedelta":
        days = next((kw.value for kw in call.keywords if kw.arg == "days"), call.args[0] if call.args else None)
        seconds = next((kw.value for kw in call.keywords if kw.arg == "seconds"), None)
        if (isinstance(days, ast.Constant) and isinstance(days.value, (int, float)) and days.value >= 1) or \
                (seconds is not None and _huge(seconds)):
            return f"{ast.unparse(call)}: a deadline of a day or more is no deadline"
    if any(_huge(kw.value) for kw in call.keywords if kw.arg and "timeout" in kw.arg):
        return f"{ast.unparse(func)}(...): a timeout of over a day is no deadline"
    if not isinstance(func, ast.Attribute):
        return None
    dotted, attr = ast.unparse(func), func.attr
    if dotted in ("ray.get", "ray.wait", "asyncio.wait"):
        return None if _bounded_kw(call) else f"{dotted}(...) without timeout="
    if dotted.startswith("subprocess.") and attr in SUBPROCESS:
        return None if _bounded_kw(call) else f"{dotted}(...) without timeout="
    if attr == "wait":
        if _bounded_first(call) or module.is_handle(func.value, handle_names) or _bounded_context(parents, call):
            return None
        return f"{dotted}() without a timeout"
    if attr == "wait_for" and dotted != "asyncio.wait_for":  # Condition.wait_for(predicate, timeout)
        return None if _bounded_first(call, 1) else f"{dotted}(predicate) without a timeout"
    if attr == "wait_for":
        return None if _bounded_first(call, 1) else f"{dotted}(awaitable) without a timeout"
    if attr in ("join", "result", "acquire", "communicate") and not call.args and not _bounded_kw(call):
        blocking = next((kw.value for kw in call.keywords if kw.arg == "blocking"), None)
        if isinstance(blocking, ast.Constant) and blocking.value is False:
            return None
        return f"{dotted}() without a timeout"
    if attr == "get" and not call.args and not _bounded_kw(call):
        block = next((kw.value for kw in call.keywords if kw.arg == "block"), None)
        if isinstance(block, ast.Constant) and block.value is False:
            return None
        return f"{dotted}() without a timeout"
    return None


def scan_source(source: str, filename: str = "<string>") -> List[str]:
    """'file:line: what' for each blocking call without a timeout in `source`."""
    tree = ast.parse(source, filename)
    module = _Module(tree)
    found = []

    def visit(node: ast.AST, parents: List[ast.AST], names: Set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = module.handle_names(node)
        if isinstance(node, ast.Call):
            problem = _problem(node, module, names, parents)
            if problem:
                found.append(f"{filename}:{node.lineno}: {problem}")
        for child in ast.iter_child_nodes(node):
            visit(child, parents + [node], names)

    visit(tree, [], set())
    return found


def scan_library() -> List[str]:
    found = []
    for path in sorted(LIB.rglob("*.py")):
        found += scan_source(path.read_text(), str(path.relative_to(ROOT)))
    return found


def test_library_has_no_unbounded_waits():
    found = scan_library()
    assert not found, "blocking calls without a timeout (give each one from the config):\n" + "\n".join(found)


def test_scan_flags_unbounded_waits_and_accepts_bounded_ones():
    flagged = scan_source('''
import ray, threading, queue, subprocess, asyncio
def f(ref, event, q, t, cond, fut, lock, proc):
    ray.get(ref)
    ray.get(ref, timeout=None)
    ray.wait([ref])
    event.wait()
    cond.wait_for(lambda: True)
    q.get()
    q.get(block=True)
    t.join()
    fut.result()
    lock.acquire()
    proc.communicate()
    subprocess.run(["ls"])
async def g(ev):
    await ev.wait()
    await asyncio.wait([ev])
def h(work, link):
    work.wait(timedelta(days=365))
    link.recv(header_timeout=1e9)
''')
    assert [line.split(":")[1] for line in flagged] == [str(n) for n in range(4, 16)] + ["17", "18", "20", "21"], flagged
    assert scan_source('''
import ray, asyncio
def f(ref, event, q, t, cond, fut, lock, group, handles, proc):
    ray.get(ref, timeout=5)
    ray.wait([ref], timeout=1.0)
    event.wait(2.0)
    event.wait(timeout=t)
    cond.wait_for(lambda: True, 3)
    q.get(timeout=1)
    q.get(block=False)
    t.join(timeout=4)
    fut.result(timeout=5)
    lock.acquire(timeout=1)
    lock.acquire(blocking=False)
    proc.communicate(timeout=9)
    ", ".join(["a"])
    {}.get("k")
    group.call("setup").wait()
    h = group.scatter("update", [1])
    h.wait()
    for other in [group.call("x") for _ in range(2)]:
        other.wait()
    pending = {0: ("act", helper(group))}
    kind, handle = pending.pop(0)
    use(handle)
def helper(group):
    return group.call("act")
def use(handle):
    return handle.wait()
async def g(cond, ref):
    await asyncio.wait_for(cond.wait(), 5)
    async with asyncio.timeout(3):
        await cond.wait()
''') == []
