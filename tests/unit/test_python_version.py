"""The package runs on every Python that pyproject.toml's `requires-python` admits (3.10 and up):
vermin finds the minimum version each construct, module and library member used in rlinf/ needs
(e.g. `asyncio.timeout` is 3.11+) and fails on anything newer than the declared minimum."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _declared_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*">=\s*(\d+\.\d+)"', text, re.MULTILINE)
    assert match, "pyproject.toml declares no requires-python lower bound"
    return match.group(1)


def _vermin(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("vermin")  # the venv's console script
    exe = str(exe) if exe.exists() else shutil.which("vermin")
    if exe is None:
        pytest.fail("vermin is not installed: pip install -e '.[dev]'")
    return subprocess.run([exe, "--no-tips", "--violations", "--eval-annotations", "--processes=1",
                           f"-t={_declared_minimum()}-", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_declared_minimum_is_3_10():
    assert _declared_minimum() == "3.10"


def test_package_needs_no_newer_python_than_declared():
    result = _vermin("rlinf")
    assert result.returncode == 0, f"code in rlinf/ needs a newer Python than requires-python:\n{result.stdout}"


def test_check_catches_a_311_only_api(tmp_path):
    (tmp_path / "uses_311.py").write_text(
        "import asyncio\n\n\nasync def f(x):\n    async with asyncio.timeout(1):\n        return await x\n")
    result = _vermin(str(tmp_path))
    assert result.returncode != 0 and "asyncio.timeout" in result.stdout
