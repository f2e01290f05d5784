"""Run files: named with the controller's prefix, removed by prefix (whole run or one group), and
files of a controller that no longer runs are swept."""

import os
import subprocess
import sys
import tempfile

import pytest

from rlinf.utils import runfiles


@pytest.fixture
def roots(tmp_path, monkeypatch):
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(runfiles, "SHM_DIR", str(shm))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return shm, tmp


def test_paths_carry_the_run_prefix_group_and_rank(roots, monkeypatch):
    shm, tmp = roots
    monkeypatch.setenv(runfiles.ENV, "rlinf-123-abcd")
    monkeypatch.setenv("RLINF_GROUP", "roll-out")
    monkeypatch.setenv("RLINF_RANK", "3")
    path = runfiles.shm_path("reshard")
    assert os.path.dirname(path) == str(shm)
    assert os.path.basename(path).startswith("rlinf-123-abcd.roll_out.3.reshard.")
    folder = runfiles.temp_dir("vllm", group="g", rank=0)
    assert os.path.isdir(folder) and os.path.dirname(folder) == str(tmp)
    open(path, "w").close()
    assert runfiles.run_files("rlinf-123-abcd", "roll-out") == [path]
    assert runfiles.run_files("rlinf-123-abcd") == sorted([path, folder])


def test_cleanup_by_run_and_by_group(roots):
    shm, tmp = roots
    mine = runfiles.RunFiles()
    other = runfiles.RunFiles()
    files = [shm / f"{mine.prefix}.rollout.0.reshard.x", shm / f"{mine.prefix}.rollout.1.reshard.y",
             shm / f"{mine.prefix}.rollout2.0.reshard.z", shm / f"{other.prefix}.rollout.0.reshard.x"]
    for f in files:
        f.write_bytes(b"0" * 16)
    (tmp / f"{mine.prefix}.actor.0.ckpt.q").mkdir()
    (tmp / f"{mine.prefix}.actor.0.ckpt.q" / "inner").write_text("x")
    unrelated = tmp / "something-else"
    unrelated.write_text("keep")
    assert mine.cleanup("rollout") == 2  # not rollout2, not the other run
    assert sorted(os.listdir(shm)) == sorted([files[2].name, files[3].name])
    assert mine.close() == 2  # the rest of the run: rollout2's arena and the folder
    assert mine.close() == 0  # idempotent
    assert os.listdir(shm) == [files[3].name] and os.listdir(tmp) == ["something-else"]
    other.close()
    assert os.listdir(shm) == []


def test_sweep_removes_files_of_controllers_that_no_longer_run(roots):
    shm, tmp = roots
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60, check=True)
    dead_pid = int(dead.stdout)
    stale = shm / f"rlinf-{dead_pid}-0a1b2c3d.rollout.0.reshard.x"
    live = shm / f"rlinf-{os.getpid()}-0a1b2c3d.rollout.0.reshard.x"
    foreign = shm / "rlinf-notapid.x"
    for f in (stale, live, foreign):
        f.write_text("")
    (tmp / f"rlinf-{dead_pid}-ffff.actor.0.tmp.d").mkdir()
    assert runfiles.sweep_stale() == 2
    assert sorted(os.listdir(shm)) == sorted([live.name, foreign.name]) and os.listdir(tmp) == []
