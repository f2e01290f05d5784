"""Checkpoint directories of a run: `<run>/checkpoints/step_<N>/` with one folder per training group.

A checkpoint counts only once its `COMPLETE` marker exists (written last), so a run killed while
saving never resumes from a half-written checkpoint.
"""

import json
import shutil
from pathlib import Path
from typing import Callable, Tuple

from rlinf.errors import InputError


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
    from rlinf.utils.checkpoint_layout import newest_complete  # torch: imported when resuming only

    newest = newest_complete(run_dir)
    if newest is None:
        raise InputError("no complete checkpoint in this directory (expected checkpoints/step_N/COMPLETE)",
                         key=str(run_dir))
    step, path = newest
    return path, step


# ---- plain-data files (torch.save / torch.load(weights_only=True)) -----------------------------------
# numpy arrays and scalars are not on torch's weights_only allow-list: they are stored as their raw bytes
# (a uint8 tensor) with dtype and shape, so they come back bit for bit with the same dtype; object arrays
# (e.g. instruction strings) element by element. Tuples come back as tuples.
_ND, _NS, _OBJ, _TUP = "__rlinf_ndarray__", "__rlinf_npscalar__", "__rlinf_objarray__", "__rlinf_tuple__"


def _encode(obj):
    import numpy as np
    import torch

    if isinstance(obj, np.generic):  # before the Python types: np.float64 is a float, np.bool_ is not a bool
        return {_NS: _encode(np.asarray(obj))}
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {_OBJ: [_encode(x) for x in obj.reshape(-1).tolist()], "shape": list(obj.shape)}
        data = np.ascontiguousarray(obj)
        return {_ND: torch.frombuffer(bytearray(data.tobytes()), dtype=torch.uint8) if data.nbytes
                else torch.zeros(0, dtype=torch.uint8), "dtype": data.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUP: [_encode(x) for x in obj]}
    if isinstance(obj, list):
        return [_encode(x) for x in obj]
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint state file")


def _decode(obj):
    import numpy as np

    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if _ND in obj and len(obj) == 3:
        return np.frombuffer(obj[_ND].numpy().tobytes(), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if _OBJ in obj and len(obj) == 2:
        out = np.empty(len(obj[_OBJ]), dtype=object)
        out[:] = [_decode(x) for x in obj[_OBJ]]
        return out.reshape(obj["shape"])
    if _NS in obj and len(obj) == 1:
        return _decode(obj[_NS])[()]
    if _TUP in obj and len(obj) == 1:
        return tuple(_decode(x) for x in obj[_TUP])
    return {k: _decode(v) for k, v in obj.items()}


def save_state(file, obj) -> None:
    """Write plain data (dicts, lists, tuples, str/int/float/bool/None, torch tensors, numpy arrays and
    scalars) so that `load_state` reads it back exactly with `torch.load(weights_only=True)`."""
    import torch

    torch.save(_encode(obj), file)


def load_state(file):
    import torch

    return _decode(torch.load(file, weights_only=True))
