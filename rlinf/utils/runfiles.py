"""Files a run leaves in shared memory and the temp dir, owned and removed by the controller.

Workers create shared-memory arenas (/dev/shm) and temporary files for a run, but a worker cannot be
trusted to remove them: `ray.kill` and SIGKILL run no destructor, and a rank that dies mid-sync
leaves its files behind. So every such file is named with a per-run prefix that the controller
chooses (`new_run_prefix`, held by `Cluster.run_prefix`) and hands to its workers in the
environment (`RLINF_RUN_PREFIX`); the controller removes everything carrying its prefix when the
run ends normally, when it fails, before a restart (`Cluster.shutdown`, which `Runner.close` calls)
and at interpreter exit (atexit / SIGTERM). Names:

    /dev/shm/<prefix>.<group>.<rank>.<kind>.<random>      (shm_path)
    <tempdir>/<prefix>.<group>.<rank>.<kind>.<random>     (temp_dir, temp_path)

`<prefix>` is `rlinf-<controller pid>-<random>`: a later controller removes the files of a
controller that was itself SIGKILLed (`sweep_stale`: its pid is gone).

Only the controller's node is cleaned: on a multi-node cluster, files a worker left on another
node are removed when a later run's controller starts on that node (`sweep_stale`).
"""

import atexit
import logging
import os
import re
import shutil
import tempfile
import uuid
from typing import List, Optional

logger = logging.getLogger(__name__)

ENV = "RLINF_RUN_PREFIX"
SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^rlinf-(\d+)-[0-9a-f]+(\.|$)")
_own_prefix: Optional[str] = None


def new_run_prefix() -> str:
    """A fresh prefix for a run controlled by this process."""
    return f"rlinf-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def run_prefix() -> str:
    """The prefix of the run this process belongs to (a worker: its controller's; otherwise one of its own)."""
    global _own_prefix
    prefix = os.environ.get(ENV)
    if prefix:
        return prefix
    if _own_prefix is None:
        _own_prefix = new_run_prefix()
    return _own_prefix


def _safe(part) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(part))


def _stem(kind: str, group: Optional[str], rank: Optional[int]) -> str:
    group = os.environ.get("RLINF_GROUP", "local") if group is None else group
    rank = int(os.environ.get("RLINF_RANK", "0")) if rank is None else rank
    return f"{run_prefix()}.{_safe(group)}.{rank}.{_safe(kind)}.{uuid.uuid4().hex[:8]}"


def roots() -> List[str]:
    """The folders run files live in: /dev/shm (where it exists) and the temp dir."""
    out = [SHM_DIR] if os.path.isdir(SHM_DIR) else []
    tmp = tempfile.gettempdir()
    return out + ([tmp] if tmp not in out else [])


def shm_path(kind: str, group: Optional[str] = None, rank: Optional[int] = None) -> str:
    """A fresh path in /dev/shm (the temp dir where there is none) for a file of this run."""
    root = SHM_DIR if os.path.isdir(SHM_DIR) else tempfile.gettempdir()
    return os.path.join(root, _stem(kind, group, rank))


def temp_path(kind: str, group: Optional[str] = None, rank: Optional[int] = None) -> str:
    """A fresh path in the temp dir for a file of this run (not created)."""
    return os.path.join(tempfile.gettempdir(), _stem(kind, group, rank))


def temp_dir(kind: str, group: Optional[str] = None, rank: Optional[int] = None) -> str:
    """A new, empty folder in the temp dir for this run (removed with the run's other files)."""
    path = temp_path(kind, group, rank)
    os.makedirs(path)
    return path


def run_files(prefix: str, group: Optional[str] = None) -> List[str]:
    """Paths of `prefix`'s files (of one group's ranks when `group` is given) in every root."""
    want = prefix + "." + (_safe(group) + "." if group is not None else "")
    out = []
    for root in roots():
        try:
            names = os.listdir(root)
        except OSError:
            continue
        out += [os.path.join(root, n) for n in names if n.startswith(want)]
    return sorted(out)


def _remove(path: str) -> bool:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        logger.warning("cannot remove run file %s: %s", path, e)
        return False


def cleanup_run_files(prefix: str, group: Optional[str] = None) -> int:
    """Remove every file and folder of the run `prefix` (of one group when given); returns how many.

    Safe while workers still map an arena: unlinking only drops the name, the memory is freed when
    the last mapping goes."""
    removed = sum(_remove(p) for p in run_files(prefix, group))
    if removed:
        logger.info("removed %d run file(s) of %s%s", removed, prefix, f" group {group}" if group else "")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> int:
    """Remove run files whose controller process is gone (a controller that was itself killed)."""
    removed = 0
    for root in roots():
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            m = _NAME.match(name)
            if m and not _alive(int(m.group(1))):
                removed += _remove(os.path.join(root, name))
    if removed:
        logger.info("removed %d run file(s) left by controllers that no longer run", removed)
    return removed


class RunFiles:
    """The controller's handle on its run's files: `cleanup()` is idempotent and also runs at exit."""

    def __init__(self, prefix: Optional[str] = None):
        self.prefix = prefix or new_run_prefix()
        self._registered = True
        atexit.register(self.cleanup)

    def cleanup(self, group: Optional[str] = None) -> int:
        return cleanup_run_files(self.prefix, group)

    def close(self) -> int:
        """Remove every file of the run and drop the exit hook."""
        removed = self.cleanup()
        if self._registered:
            atexit.unregister(self.cleanup)
            self._registered = False
        return removed
