"""Checkpoint directories of a run: `<run>/checkpoints/step_<N>/` with one folder per training group.

A checkpoint counts only once its `COMPLETE` marker exists (written last), so a run killed while
saving never resumes from a half-written checkpoint.
"""

import json
import re
import shutil
from pathlib import Path
from typing import Callable, Tuple

from rlinf.errors import InputError

_STEP = re.compile(r"^step_(\d+)$")


def save(run_dir: Path, step: int, write: Callable[[str], None]) -> Path:
    path = Path(run_dir) / "checkpoints" / f"step_{step:06d}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    write(str(path))
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    (path / "COMPLETE").write_text("")
    return path


def latest(run_dir: Path) -> Tuple[Path, int]:
    """The newest complete checkpoint of a run directory (or a checkpoint directory itself) and its step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("resume directory not found", key=str(run_dir))
    if (run_dir / "COMPLETE").exists():
        return run_dir, json.loads((run_dir / "trainer_state.json").read_text())["step"]
    found = []
    for child in (run_dir / "checkpoints").glob("step_*"):
        m = _STEP.match(child.name)
        if m and (child / "COMPLETE").exists():
            found.append((int(m.group(1)), child))
    if not found:
        raise InputError("no complete checkpoint in this directory (expected checkpoints/step_N/COMPLETE)",
                         key=str(run_dir))
    step, path = max(found)
    return path, step
