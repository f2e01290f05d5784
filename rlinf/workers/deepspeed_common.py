"""What the DeepSpeed workers share (the actor and the reward-model trainer): the import with the CPU
accelerator where there is no CUDA, and checkpoints through the engine's own save / load with the
layout check that loads nothing.

Subclasses hold the engine in `self.model` and the wrapped module in `self.module`, and inherit
`save_worker_state` / `load_worker_state` from FSDPTrainWorker.
"""

import os
from pathlib import Path
from typing import Optional

import torch

CKPT_TAG = "rlinf"  # DeepSpeed's checkpoint tag: <path>/rlinf/...


def import_deepspeed():
    """`import deepspeed`, with DS_ACCELERATOR=cpu on hosts without CUDA (set before the first import)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


class DeepSpeedCheckpointMixin:
    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        self.model.save_checkpoint(path, tag=CKPT_TAG)
        self.save_worker_state(path, extra)
        return path

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        """None when the DeepSpeed checkpoint at `path` holds this model's parameters (names and shapes,
        from the `param_shapes` DeepSpeed records; nothing is loaded into the engine); else the first
        difference. Optimizer partitions follow the parameters and are checked by DeepSpeed on load."""
        from rlinf.utils.checkpoint_layout import first_mismatch

        files = sorted((Path(path) / CKPT_TAG).glob("*model_states.pt"))
        if not files:
            return f"{path} holds no DeepSpeed checkpoint (tag '{CKPT_TAG}')"
        saved = torch.load(files[0], map_location="cpu", weights_only=True)
        found = {name: (tuple(shape), "") for group in saved["param_shapes"] for name, shape in group.items()}
        expected = {name: (tuple(getattr(p, "ds_shape", p.shape)), "") for name, p in self.module.named_parameters()
                    if p.requires_grad}
        return first_mismatch(expected, found)

    def load_checkpoint(self, path: str) -> dict:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} not found")
        load_path, _ = self.model.load_checkpoint(path, tag=CKPT_TAG)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint (tag '{CKPT_TAG}') under {path}")
        return self.load_worker_state(path)
