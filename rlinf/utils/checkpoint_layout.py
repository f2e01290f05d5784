"""Does a checkpoint fit the model this config builds? Compared by layout, before anything loads.

A layout is `{name: (shape, dtype)}` over every tensor a checkpoint holds: model parameters and
buffers, optimizer state (Adam moments, step counters). Two layouts fit when they hold the same names
and each name has the same shape and dtype. `first_mismatch` names the first name (in sorted order)
where they differ, so a resume that cannot work is reported as one line naming that tensor - before
the run directory it resumes is touched.

Layouts come from the live model (the worker knows what it built: `layout_of`) and from the files
(`dcp_layout` reads torch.distributed.checkpoint metadata only; `torch_file_layout` a `torch.save`
file with `weights_only=True`). Nothing here loads tensors into a model.
"""

import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch

from rlinf.errors import InputError

Layout = Dict[str, Tuple[Tuple[int, ...], str]]

_STEP = re.compile(r"^step_(\d+)$")
INIT_KEY = "actor.init_checkpoint"


def newest_complete(run_dir: Path) -> Optional[Tuple[int, Path]]:
    """(step, path) of the newest `checkpoints/step_N` of a run directory with its COMPLETE marker; None
    when it has none."""
    found = []
    for child in (Path(run_dir) / "checkpoints").glob("step_*"):
        m = _STEP.match(child.name)
        if m and (child / "COMPLETE").exists():
            found.append((int(m.group(1)), child))
    return max(found) if found else None


def init_checkpoint_dir(path: str, group: str = "actor") -> Path:
    """The torch.distributed.checkpoint folder of `group` that `actor.init_checkpoint` names: `path`
    itself when it holds one (`.metadata`), else `path/<group>` of a complete checkpoint directory
    (`<run>/checkpoints/step_N`), else that of a run directory's newest complete checkpoint. InputError
    naming actor.init_checkpoint when there is none."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InputError(f"checkpoint directory not found: {path}", key=INIT_KEY)
    if (p / ".metadata").is_file():
        return p
    if not (p / "COMPLETE").exists():
        newest = newest_complete(p)
        if newest is None:
            raise InputError(f"{path} is neither a checkpoint (checkpoints/step_N with COMPLETE) nor a run "
                             "directory holding one", key=INIT_KEY)
        p = newest[1]
    if not (p / group / ".metadata").is_file():
        raise InputError(f"{p} holds no {group} shards ({group}/.metadata missing)", key=INIT_KEY)
    return p / group


def layout_of(state: Mapping, prefix: str = "") -> Layout:
    """Flatten a nested state dict (dicts and lists, as torch.distributed.checkpoint does: keys joined
    with '.') into the layout of its tensors. A DTensor contributes its global shape."""
    out: Layout = {}
    items = state.items() if isinstance(state, Mapping) else enumerate(state)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = (tuple(value.shape), str(value.dtype).replace("torch.", ""))
        elif isinstance(value, (Mapping, list, tuple)):
            out.update(layout_of(value, f"{name}."))
    return out


def dcp_layout(path: str) -> Layout:
    """The tensors a torch.distributed.checkpoint directory holds, from its metadata file alone."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = FileSystemReader(path).read_metadata()
    return {name: (tuple(meta.size), str(meta.properties.dtype).replace("torch.", ""))
            for name, meta in metadata.state_dict_metadata.items() if isinstance(meta, TensorStorageMetadata)}


def torch_file_layout(path: Path, prefix: str = "") -> Layout:
    """The tensors of a `torch.save` file (loaded with weights_only=True, mapped, not copied)."""
    return layout_of(torch.load(path, map_location="cpu", weights_only=True, mmap=True), prefix)


def model_layout(path: Path) -> Layout:
    """The layout of the model tensors (`model.*`, no optimizer state) of a torch.distributed.checkpoint."""
    return {name: spec for name, spec in dcp_layout(str(path)).items() if name.startswith("model.")}


def first_mismatch(expected: Layout, found: Layout) -> Optional[str]:
    """None when the layouts fit; else a short text naming the first differing tensor."""
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            return f"tensor '{name}' missing from the checkpoint"
        if name not in expected:
            return f"checkpoint tensor '{name}' is not in the model this config builds"
        if expected[name] != found[name]:
            (want_shape, want_dtype), (got_shape, got_dtype) = expected[name], found[name]
            return (f"tensor '{name}': checkpoint has shape {list(got_shape)} {got_dtype}, "
                    f"this config builds {list(want_shape)} {want_dtype}")
    return None


def optimizer_mismatch(optimizer: torch.optim.Optimizer, saved: Mapping) -> Optional[str]:
    """None when a saved `optimizer.state_dict()` fits `optimizer`: as many parameters, and every
    per-parameter state tensor (Adam's moments; scalar step counters aside) of its parameter's shape
    and dtype. A fresh optimizer has no state yet, so its parameters are the reference."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(params):
        return f"optimizer state holds {len(saved_ids)} parameters, this config builds {len(params)}"
    for position, (idx, param) in enumerate(zip(saved_ids, params)):
        for key, value in saved["state"].get(idx, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and (
                    tuple(value.shape) != tuple(param.shape) or value.dtype != param.dtype):
                return (f"optimizer state '{key}' of parameter {position}: checkpoint has shape "
                        f"{list(value.shape)} {value.dtype}, this config builds {list(param.shape)} {param.dtype}")
    return None
