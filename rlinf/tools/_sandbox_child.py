"""The sandbox's child side: run as `python -I _sandbox_child.py CONFIG_JSON` by rlinf.tools.sandbox.

Standard library only, imports nothing of rlinf. Steps, in order, all before any user code runs:
1. namespaces (as planned by the parent's probe): network + mount + pid (as root), or the same inside a
   fresh user namespace (unprivileged); a failure falls back and is reported;
2. fork: this process stays a small supervisor (waits, reports the worker's status as its exit code,
   kills leftover descendants); the worker is pid 1 of the new pid namespace when there is one;
3. worker: read-only remount of every mount except the scratch dir; a new /proc; drop to the run's
   own uid (as root) so RLIMIT_NPROC counts only this run's processes; resource limits; audit hooks
   (socket refusal always, the file-write guard and no-exec when the mounts are not read-only);
4. run the user's file `main.py` in the scratch dir with runpy.
Facts (isolation modes, the worker's pid, limits hit) go to the parent as JSON lines on fd `meta_fd`.
"""

import ctypes
import errno
import json
import os
import resource
import runpy
import signal
import sys
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

_libc = ctypes.CDLL(None, use_errno=True)
CFG = json.loads(sys.argv[1])
META_FD = CFG["meta_fd"]
SCRATCH = CFG["scratch"]
MAIN = os.path.join(SCRATCH, "main.py")


def meta(**facts) -> None:
    """One JSON line to the parent; never blocks (the fd is non-blocking) and never raises."""
    try:
        os.write(META_FD, (json.dumps(facts) + "\n").encode())
    except OSError:
        pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_namespaces(plan: dict) -> dict:
    """Unshare what the plan allows; returns the modes in force."""
    modes = {"netns": False, "mountns": False, "pidns": False, "userns": False}
    if not (plan.get("netns") or plan.get("mountns")):
        return modes
    flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    if plan.get("userns"):
        flags |= CLONE_NEWUSER
    try:
        _check(_libc.unshare(flags), "unshare")
    except OSError as exc:
        meta(event="namespace_failed", error=str(exc))
        return modes
    if plan.get("userns"):
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        modes["userns"] = True
    modes.update(netns=True, pidns=True, mountns=bool(plan.get("mountns")))
    return modes


def _mount_points() -> list:
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    out = []
    for row in rows:
        point = row[4].replace("\\040", " ")
        opts = row[5].split(",")
        flags = (MS_NOSUID if "nosuid" in opts else 0) | (MS_NODEV if "nodev" in opts else 0) | (
            MS_NOEXEC if "noexec" in opts else 0)
        out.append((point, flags))
    return out


def read_only_mounts() -> bool:
    """Make every mount read-only except the scratch dir (bind-mounted onto itself first)."""
    try:
        _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        _check(_libc.mount(SCRATCH.encode(), SCRATCH.encode(), None, MS_BIND, None), "bind scratch")
    except OSError as exc:
        meta(event="mount_failed", error=str(exc))
        return False
    failed = []
    for point, flags in _mount_points():
        if point == SCRATCH:
            continue
        rc = _libc.mount(None, point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)
        if rc != 0 and ctypes.get_errno() != errno.ENOENT:
            failed.append(point)
    if failed:
        meta(event="remount_failed", mounts=failed)
    # a fresh /proc that shows only this pid namespace (a failure leaves the read-only old one)
    _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    return not failed


def _needed_paths() -> list:
    """What the worker must still read after dropping to its own uid: the interpreter and its paths."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(os.path.realpath(p) for p in paths)


def _blocking_ancestor(path: str):
    """The highest ancestor of `path` that other users cannot enter (mode o-x), or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        anc = "/" + "/".join(parts[:i])
        if not os.stat(anc).st_mode & 0o001:
            return anc
    return None


def readable_by_others(path: str) -> bool:
    return _blocking_ancestor(path) is None and os.stat(path).st_mode & 0o005 == 0o005


def expose_paths(paths: list) -> list:
    """Hide each directory other users cannot enter (e.g. /root, 0700) under an empty tmpfs and bind
    back only the interpreter's directories below it, so the run's own uid can read them and nothing
    else of that directory (tokens, keys). Returns the directories hidden."""
    blocked = {}
    for p in paths:
        anc = _blocking_ancestor(p)
        if anc:
            blocked.setdefault(anc, []).append(p)
    os.umask(0o022)
    for anc, subs in blocked.items():
        keep = []
        for p in sorted(subs):
            if not any(p == k or p.startswith(k + "/") for k in keep):
                keep.append(p)
        fds = [(p, os.open(p, os.O_PATH)) for p in keep]
        _check(_libc.mount(b"tmpfs", anc.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=1m"),
               f"tmpfs on {anc}")
        for p, fd in fds:
            os.makedirs(p, exist_ok=True)
            _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, MS_BIND | MS_REC, None),
                   f"bind {p}")
            os.close(fd)
    return sorted(blocked)


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def set_limits(lim: dict) -> None:
    mem = lim["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_procs"], lim["max_procs"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_mb"] * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _inside_scratch(path) -> bool:
    if isinstance(path, int):
        return True  # an fd: opened before, checked then
    real = os.path.realpath(os.fsdecode(path))
    return real == SCRATCH or real.startswith(SCRATCH + os.sep) or real == "/dev/null"


class _Guard:
    """Audit hook (sys.addaudithook: cannot be removed from Python) refusing what the kernel may not."""

    def __init__(self, net: bool, files: bool, exec_: bool, fork: bool):
        self.net, self.files, self.exec_, self.fork = net, files, exec_, fork

    def refuse(self, limit: str, what: str) -> None:
        meta(event="violation", limit=limit, what=what)
        raise PermissionError(f"sandbox: {what} is not allowed ({limit})")

    def __call__(self, event: str, args: tuple) -> None:
        if self.net and event == "socket.__new__":
            if args[1] != 1:  # only AF_UNIX (1) is allowed
                self.refuse("network", "opening a network socket")
        elif self.files and event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and path is not None and not _inside_scratch(path):
                self.refuse("filesystem", f"writing {os.fsdecode(path)!r} outside the scratch directory")
        elif self.files and event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                                       "os.truncate", "os.utime", "os.symlink", "os.link", "os.rename",
                                       "shutil.rmtree"):
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if any(not _inside_scratch(p) for p in paths):
                self.refuse("filesystem", f"{event} outside the scratch directory")
        elif self.fork and event == "os.fork":
            self.refuse("process-count", "starting a process (no process-count limit can be enforced here)")
        elif self.exec_ and event in ("os.exec", "os.posix_spawn", "os.system", "subprocess.Popen",
                                      "os.spawn", "pty.spawn"):
            self.refuse("process", "starting another program (no kernel isolation here)")
        elif self.exec_ and event in ("ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
                                      "ctypes.call_function"):
            self.refuse("process", "ctypes (it could bypass the sandbox's hooks)")


def run_user_code() -> int:
    """Run main.py; map the exceptions that mean a limit to a named violation. Returns the exit code."""
    sys.argv = ["main.py"]
    sys.path.insert(0, SCRATCH)
    try:
        runpy.run_path(MAIN, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except MemoryError:
        meta(event="violation", limit="memory", what="out of memory (MemoryError)")
        os.write(2, b"MemoryError\n")
        return 1
    except BaseException as exc:  # noqa: BLE001 - the user's program failed: print it like python does
        if isinstance(exc, BlockingIOError) and exc.errno == errno.EAGAIN or (
                isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)):
            meta(event="violation", limit="process-count", what="could not start a process or thread")
        elif isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            meta(event="violation", limit="filesystem", what=f"{exc} (only the scratch directory is writable)")
        elif isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            meta(event="violation", limit="network", what=f"{exc} (no network)")
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != MAIN:
            tb = tb.tb_next  # show the user's frames only, as python would
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        return 1
    return 0


def init_reaper() -> None:
    """As pid 1 of the namespace, fork the process that runs the user's code (pid 1 would ignore
    signals such as SIGXCPU) and reap every orphan until it ends; then exit with its status, which
    makes the kernel kill whatever is left in the namespace. Returns in the child only."""
    pid = os.fork()
    if pid == 0:
        return
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def worker(modes: dict) -> None:
    if not modes["pidns"]:
        os.setpgid(0, 0)  # its own group, killed by the supervisor and the parent
    needed = _needed_paths()
    if modes["mountns"]:
        try:
            modes["hidden"] = expose_paths(needed)
        except OSError as exc:
            meta(event="mount_failed", error=str(exc))
        modes["mountns"] = read_only_mounts()
        os.chdir(SCRATCH)  # the cwd was taken before the scratch bind mount: enter the writable one
    uid = CFG["uid"]
    if uid is not None and all(readable_by_others(p) for p in needed):
        drop_privileges(uid)
        modes["uid"] = True
    else:
        uid, modes["uid"] = None, False
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    set_limits(CFG["limits"])
    if modes["pidns"]:
        init_reaper()
    weak_fs = not modes["mountns"]
    # as root without a uid of its own, RLIMIT_NPROC does not bind: no fork, no exec then
    no_procs = os.getuid() == 0
    sys.addaudithook(_Guard(net=True, files=weak_fs, exec_=weak_fs or not modes["netns"] or no_procs,
                            fork=no_procs))
    meta(event="ready", worker_pid=os.getpid(), modes=modes, uid=uid)
    sys.stdout.flush()
    code = run_user_code()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _children() -> list:
    """Pids whose parent is this process (orphans of the worker come here: it is their subreaper)."""
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                out.append(int(name))
    return out


def supervise(pid: int) -> None:
    """Wait for the worker, kill what it left behind (this process is their subreaper), exit with its status."""
    meta(event="worker", pid=pid)
    _, status = os.waitpid(pid, 0)
    for _ in range(100):
        for target in [-pid] + _children():
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if done == 0:
            os.sched_yield()
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def main() -> None:
    os.set_blocking(META_FD, False)
    sys.dont_write_bytecode = True
    modes = enter_namespaces(CFG["plan"])
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = os.fork()
    if pid == 0:
        worker(modes)
    else:
        supervise(pid)


if __name__ == "__main__":
    main()
