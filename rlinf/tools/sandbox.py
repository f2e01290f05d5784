"""`python`: run untrusted Python in a separate, limited process (the parent side of the sandbox).

Each call gets a fresh scratch directory (removed afterwards) as cwd, HOME and TMPDIR, and runs
`rlinf/tools/_sandbox_child.py`, which sets everything up before the user's code runs:
- limits: RLIMIT_CPU (`cpu_s`), RLIMIT_AS (`memory_mb`), RLIMIT_NPROC (`max_procs`), RLIMIT_FSIZE
  (`file_mb`); here the output is capped at `output_bytes` and the whole run at `wall_s` (then every
  process of the run is SIGKILLed);
- isolation, probed once per process (`isolation()`) and reported in every result's `meta`:
  * `netns`: a fresh network namespace (only a down loopback) — else sockets are refused by an audit hook;
  * `mountns`: every mount read-only except the scratch dir (a private mount namespace) — else a
    best-effort audit hook refuses writes, removals and renames outside the scratch dir, and starting
    other programs or ctypes (which would bypass the hooks);
  * `pidns`: a pid namespace: when its first process ends the kernel kills every process of the run;
  * `uid`: as root, the run gets a uid of its own (unused by anything else), so RLIMIT_NPROC counts only
    its processes, it cannot write root's files, and the parent can sweep every process of that uid.
A limit hit, a refused operation or a failing program is a ToolResult with ok=False and an error that
names the limit; the calling process is never affected.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .base import TOOLS, ToolError, ToolResult

logger = logging.getLogger(__name__)

CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
_UID_BASE, _UID_SPAN = 1_900_000_000, 100_000_000  # per-run uids (as root), far from real accounts
_SIGNAL_LIMITS = {signal.SIGXCPU: "CPU-time limit (cpu_s={cpu_s}) exceeded",
                  signal.SIGXFSZ: "file-size limit (file_mb={file_mb}) exceeded"}


@dataclasses.dataclass
class SandboxLimits:
    """Limits of one sandboxed run (defaults suit a short tool call)."""

    cpu_s: int = 5  # CPU seconds per process (RLIMIT_CPU; SIGKILL one second later)
    memory_mb: int = 512  # address space per process (RLIMIT_AS)
    max_procs: int = 16  # processes + threads of the run (RLIMIT_NPROC)
    output_bytes: int = 64 * 1024  # stdout + stderr; more kills the run
    wall_s: float = 10.0  # wall-clock seconds; then every process of the run is killed
    file_mb: int = 16  # largest file the run may write (RLIMIT_FSIZE)

    @classmethod
    def of(cls, value: Any) -> "SandboxLimits":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ToolError(f"unknown sandbox limits: {', '.join(sorted(unknown))}")
            return cls(**value)
        raise ToolError(f"sandbox limits must be a SandboxLimits or a dict, not {type(value).__name__}")


_PROBE: Optional[Dict[str, Any]] = None
_PROBE_LOCK = threading.Lock()


def _wanted_plan() -> Dict[str, bool]:
    root = os.geteuid() == 0
    return {"netns": True, "mountns": True, "userns": not root}


def isolation() -> Dict[str, Any]:
    """Which isolation this machine gives (probed once by a real sandboxed run, then cached)."""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is None:
            plan = _wanted_plan()
            res = _run("import os\n", SandboxLimits(wall_s=20), plan)
            modes = res.meta.get("modes")
            if not res.ok or not modes:
                logger.warning("sandbox namespaces unavailable (%s); using audit hooks only", res.error)
                plan = {}
                modes = _run("pass\n", SandboxLimits(wall_s=20), plan).meta.get("modes") or {}
            _PROBE = {"plan": {"netns": bool(modes.get("netns")), "mountns": bool(modes.get("mountns")),
                               "userns": bool(modes.get("userns"))},
                      "modes": modes, "isolation": describe(modes, 0 if modes.get("uid") else None)}
            logger.info("sandbox isolation: %s", _PROBE)
        return dict(_PROBE)


def describe(modes: Dict[str, Any], uid: Optional[int]) -> Dict[str, str]:
    """Human names of the mechanisms in force, as reported in a result's meta."""
    return {
        "network": "network namespace" if modes.get("netns") else "socket refusal (audit hook)",
        "filesystem": "read-only mounts, scratch dir writable" if modes.get("mountns")
        else "best-effort audit hook (cwd/HOME/TMPDIR in scratch)",
        "processes": "pid namespace" if modes.get("pidns") else "process group + subreaper",
        "user": "a uid of its own per run" if uid is not None else "the caller's uid (root: no fork/exec)"
        if os.geteuid() == 0 else "the caller's uid",
    }


def _child_env(scratch: str) -> Dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def _collect(proc: subprocess.Popen, meta_fd: int, lim: SandboxLimits) -> Tuple[bytes, bytes, Optional[str]]:
    """Read output and meta until the run ends, the output limit or the wall clock; returns them + why stopped."""
    deadline = time.monotonic() + lim.wall_s
    out, meta = bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(meta_fd, selectors.EVENT_READ, "meta")
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out), bytes(meta), "wall"
            ready = sel.select(min(remaining, 0.1))
            if not ready and proc.poll() is not None:
                break  # the run ended; descendants that still hold the pipes are killed next
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                elif key.data == "meta":
                    meta += chunk[: max(0, 1_000_000 - len(meta))]
                else:
                    out += chunk
                    if len(out) > lim.output_bytes:
                        return bytes(out[: lim.output_bytes]), bytes(meta), "output"
    finally:
        sel.close()
    return bytes(out), bytes(meta), None


def _uid_pids(uid: int) -> List[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
            pids.append(int(name))
    return pids


def _kill(target: int) -> None:
    try:
        os.kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_all(proc: subprocess.Popen, worker_pid: Optional[int], uid: Optional[int]) -> List[int]:
    """SIGKILL every process of the run and reap the child; returns pids of the run still alive after."""
    if proc.poll() is None:
        _kill(-proc.pid)
        if worker_pid:
            _kill(worker_pid)
            _kill(-worker_pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        logger.error("sandbox child %d did not die after SIGKILL", proc.pid)
    left: List[int] = []
    if uid is not None:
        for _ in range(50):
            left = _uid_pids(uid)
            if not left:
                break
            for pid in left:
                _kill(pid)
            time.sleep(0.02)
    if left:
        logger.error("sandbox processes of uid %s survived: %s", uid, left)
    return left


def _parse_meta(raw: bytes) -> List[Dict[str, Any]]:
    events = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            events.append(item)
    return events


def _error(reason: Optional[str], events: List[Dict[str, Any]], code: int, lim: SandboxLimits,
           output: str) -> Optional[str]:
    """The error the model reads, naming the limit; None when the run succeeded."""
    if reason == "wall":
        return f"wall-clock limit (wall_s={lim.wall_s:g}) exceeded: the run was killed"
    if reason == "output":
        return f"output limit (output_bytes={lim.output_bytes}) exceeded: the run was killed"
    violations = [e for e in events if e.get("event") == "violation"]
    if violations:
        v = violations[0]
        name = {"memory": f"memory limit (memory_mb={lim.memory_mb})",
                "process-count": f"process-count limit (max_procs={lim.max_procs})",
                "network": "network limit (the sandbox has no network)",
                "filesystem": "filesystem limit (only the scratch directory is writable)",
                "process": "process limit"}.get(v.get("limit"), str(v.get("limit")))
        return f"{name}: {v.get('what')}"
    if code > 128:
        sig = code - 128
        if sig in _SIGNAL_LIMITS:
            return _SIGNAL_LIMITS[sig].format(**dataclasses.asdict(lim))
        if sig == signal.SIGKILL:
            return f"killed (CPU-time limit cpu_s={lim.cpu_s} or memory limit memory_mb={lim.memory_mb})"
        return f"killed by {signal.Signals(sig).name} (possibly the memory limit memory_mb={lim.memory_mb})"
    if code != 0:
        last = output.strip().splitlines()[-1:] or [""]
        return f"exit code {code}" + (f": {last[0][:300]}" if last[0] else "")
    return None


def _prepare(code: str) -> Tuple[str, Optional[int]]:
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="rlinf-sandbox-"))
    Path(scratch, "main.py").write_text(code)
    uid = None
    if os.geteuid() == 0:
        uid = _UID_BASE + random.SystemRandom().randrange(_UID_SPAN)
        for path in (scratch, os.path.join(scratch, "main.py")):
            os.chown(path, uid, uid)
    return scratch, uid


def _run(code: str, lim: SandboxLimits, plan: Dict[str, bool]) -> ToolResult:
    scratch, uid = _prepare(code)
    meta_r, meta_w = os.pipe()
    cfg = {"scratch": scratch, "uid": uid, "plan": plan, "meta_fd": meta_w,
           "limits": {k: v for k, v in dataclasses.asdict(lim).items() if k not in ("wall_s", "output_bytes")}}
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-I", CHILD, json.dumps(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=scratch,
                                env=_child_env(scratch), start_new_session=True, pass_fds=(meta_w,))
        os.close(meta_w)
        meta_w = -1
        out, raw_meta, reason = _collect(proc, meta_r, lim)
        events = _parse_meta(raw_meta)
        worker_pid = next((e.get("pid") for e in events if e.get("event") == "worker"), None)
        left = _kill_all(proc, worker_pid if isinstance(worker_pid, int) else None, uid)
    finally:
        if proc is not None and proc.poll() is None:
            _kill_all(proc, None, uid)
        for fd in (meta_r, meta_w):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ready = next((e for e in events if e.get("event") == "ready"), None)
    text = out.decode("utf-8", "replace")
    modes = (ready or {}).get("modes") or {}
    meta = {"exit_code": proc.returncode, "modes": modes, "isolation": describe(modes, uid if modes.get("uid") else None),
            "uid": uid if modes.get("uid") else None,
            "scratch": scratch, "leftover_pids": left}
    meta["notes"] = [e for e in events if e.get("event") in ("namespace_failed", "mount_failed", "remount_failed")]
    if ready is None and reason is None:
        return ToolResult(False, output=text, error=f"sandbox failed to start (exit code {proc.returncode})",
                          meta=meta)
    error = _error(reason, events, proc.returncode, lim, text)
    return ToolResult(error is None, output=text, error=error, meta=meta)


def run_python(code: str, limits: Any = None) -> ToolResult:
    """Run `code` in the sandbox with `limits` (SandboxLimits, a dict of its fields, or None: defaults)."""
    lim = SandboxLimits.of(limits)
    return _run(code, lim, isolation()["plan"])


@TOOLS.register("python")
def python_tool(text: str, limits: Any = None, **_: object) -> ToolResult:
    """Run a Python program; its stdout and stderr are the output."""
    return run_python(text, limits)
