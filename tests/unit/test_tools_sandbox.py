"""Security tests of the python sandbox (issue 14 item 4): each attack is contained, reported to the model
as a tool error naming the limit, and leaves nothing behind (no process, no file, no scratch dir); the
calling process is unaffected. Every test runs in two modes: the isolation this machine gives (probed:
namespaces where the kernel allows) and the fallback of audit hooks only (no namespaces).
Limits are small (wall_s <= 3) so the whole file runs in seconds; nothing asserts how long a test took.
"""

import os
import socket
import uuid
from pathlib import Path

import psutil
import pytest

from rlinf.tools import call, isolation, sandbox
from rlinf.tools.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_s=1, memory_mb=256, max_procs=8, output_bytes=4096, wall_s=3, file_mb=1)


@pytest.fixture(params=["probed", "hooks"])
def run(request):
    """Run code in the sandbox with the probed isolation or with the audit-hook fallback only."""
    plan = isolation()["plan"] if request.param == "probed" else {}

    def _run(code, limits=LIMITS):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        res = sandbox._run(code, limits, plan)
        _assert_nothing_leaked(res, before)
        return res

    _run.mode = request.param
    return _run


def _assert_nothing_leaked(res, children_before):
    assert not os.path.exists(res.meta["scratch"]), "scratch dir left behind"
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= children_before, f"child processes left: {after - children_before}"
    assert res.meta["leftover_pids"] == []
    if res.meta["uid"] is not None:
        assert sandbox._uid_pids(res.meta["uid"]) == []


def test_isolation_is_reported():
    iso = isolation()
    res = call("python", "print(6 * 7)", limits=LIMITS)
    assert res.ok, res.error
    assert res.output == "42\n"
    assert res.meta["modes"]["netns"] == iso["plan"]["netns"]
    assert set(res.meta["isolation"]) == {"network", "filesystem", "processes", "user"}


def test_failing_program_is_a_tool_error(run):
    res = run("raise ValueError('boom')\n")
    assert not res.ok and "exit code 1" in res.error and "ValueError: boom" in res.error
    assert "Traceback" in res.output


def test_infinite_loop_hits_the_cpu_limit(run):
    # a loaded machine may give the loop its CPU second slowly: the wall clock is only a backstop here
    res = run("while True:\n    pass\n", SandboxLimits(**{**LIMITS.__dict__, "wall_s": 60}))
    assert not res.ok
    assert "CPU-time limit (cpu_s=1) exceeded" in res.error, res.error


def test_sleeping_forever_is_killed_at_the_wall_clock(run):
    res = run("import time\nprint('start', flush=True)\ntime.sleep(1000)\n",
              SandboxLimits(**{**LIMITS.__dict__, "wall_s": 1.5}))
    assert not res.ok and "wall-clock limit (wall_s=1.5)" in res.error
    assert res.output == "start\n"


def test_fork_bomb_is_contained(run):
    res = run("import os\nwhile True:\n    os.fork()\n")
    assert not res.ok
    assert "process-count limit" in res.error or "wall-clock limit" in res.error, res.error


def test_shell_fork_bomb_is_contained(run):
    code = "import subprocess\nsubprocess.run(['bash', '-c', ':(){ :|:& };:'])\nimport time\ntime.sleep(60)\n"
    res = run(code, SandboxLimits(**{**LIMITS.__dict__, "wall_s": 2}))
    assert not res.ok
    if run.mode == "hooks":  # no kernel isolation: starting programs is refused
        assert "process limit" in res.error or "process-count limit" in res.error
    else:
        assert "wall-clock limit" in res.error


def test_memory_bomb_is_refused(run):
    res = run("chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))\n")
    assert not res.ok and "memory limit (memory_mb=256)" in res.error
    res = run("x = bytearray(8 * 1024 ** 3)\n")
    assert not res.ok and "memory limit" in res.error


def test_writing_outside_the_scratch_dir_is_refused(run):
    target = Path("/tmp") / f"rlinf-escape-{uuid.uuid4().hex}"
    res = run(f"open({str(target)!r}, 'w').write('x')\n")
    assert not res.ok and "filesystem limit" in res.error, res.error
    assert not target.exists()
    res = run(f"import os\nos.mkdir({str(target)!r})\n")
    assert not res.ok and not target.exists()
    # the scratch dir (cwd, HOME, TMPDIR) is writable
    res = run("import os, tempfile\nopen('a.txt', 'w').write('x')\ntempfile.mkstemp()\nprint(os.listdir('.'))\n")
    assert res.ok, res.error
    assert "a.txt" in res.output


def test_writing_outside_through_another_program_fails(run):
    target = Path("/tmp") / f"rlinf-escape-{uuid.uuid4().hex}"
    res = run(f"import subprocess\nsubprocess.run(['touch', {str(target)!r}], check=True)\n")
    assert not res.ok
    assert not target.exists()


def test_sockets_are_refused(run):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        res = run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n")
        assert not res.ok and "network limit" in res.error, res.error
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()


def test_network_namespace_has_no_interface_but_loopback():
    if not isolation()["plan"]["netns"]:
        pytest.skip("no network namespace on this kernel (sockets are refused by the audit hook instead)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # another program is not bound by the audit hook: the namespace must stop it
        code = ("import socket, subprocess, sys\nprint(socket.if_nameindex())\n"
                "r = subprocess.run([sys.executable, '-c', 'import socket; "
                f"socket.create_connection((\"127.0.0.1\", {port}), timeout=1)'])\n"
                "print('rc', r.returncode)\n")
        res = call("python", code, limits=LIMITS)
        assert "[(1, 'lo')]" in res.output and "rc 1" in res.output, res.output
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()


def test_huge_output_is_cut_and_killed(run):
    res = run("while True:\n    print('x' * 1000)\n")
    assert not res.ok and "output limit (output_bytes=4096)" in res.error
    assert len(res.output) <= 4096


def test_root_home_is_hidden():
    modes = isolation()["modes"]
    if "/root" not in modes.get("hidden", []):
        pytest.skip("/root is not hidden on this machine (not root, or no mount namespace)")
    res = call("python", "import os\nprint(sorted(os.listdir('/root')))\n", limits=LIMITS)
    assert res.ok and res.output.strip() == "['.pyenv']"


def test_caller_is_unaffected_by_the_attacks():
    pid, cwd, env = os.getpid(), os.getcwd(), dict(os.environ)
    for code in ("import os\nwhile True:\n    os.fork()\n", "x = bytearray(8 * 1024 ** 3)\n",
                 "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n"):
        res = call("python", code, limits=LIMITS)
        assert not res.ok
    assert (os.getpid(), os.getcwd(), dict(os.environ)) == (pid, cwd, env)
    assert call("calculator", "2+2").output == "4"


def test_bad_limits_are_a_tool_error():
    res = call("python", "print(1)", limits={"wall": 1})
    assert not res.ok and "unknown sandbox limits: wall" in res.error
