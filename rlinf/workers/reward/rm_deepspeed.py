"""DeepSpeedRewardModelTrainer: the reward-model trainer (rlinf.workers.reward.rm_trainer) with DeepSpeed
ZeRO data parallel (`actor.backend: deepspeed`, stage `actor.zero_stage`) instead of FSDP2.

Only the engine differs: `setup` wraps the classifier in `deepspeed.initialize` (client AdamW with
actor.lr / weight_decay, `gradient_clipping` = actor.grad_clip) on the group's process group; each
micro-batch calls `engine.backward` on its share of the loss and the rank's last one marks the
accumulation boundary, after which `engine.step()` averages gradients over ranks, clips and steps (the
engine's gradient_accumulation_steps is 1, so it never rescales the already-normalised loss).
Checkpoints are DeepSpeed's own (`engine.save_checkpoint`, tag `rlinf`) plus the torch RNG; the Hugging
Face export gathers the full weights (ZeRO-3: `GatheredParameters`) and rank 0 writes them.
On a machine without CUDA, `DS_ACCELERATOR=cpu` is set before deepspeed is imported.
"""

import os
from contextlib import nullcontext
from typing import Dict, Optional

import torch

from rlinf.config.schema import ActorConfig
from rlinf.workers.deepspeed_common import DeepSpeedCheckpointMixin, import_deepspeed
from rlinf.workers.reward.rm_trainer import RewardModelTrainer

class DeepSpeedRewardModelTrainer(DeepSpeedCheckpointMixin, RewardModelTrainer):
    """`self.model` is the DeepSpeed engine after `setup`; `self.module` the wrapped classifier."""

    def __init__(self, cfg: ActorConfig, vocab_size: int, seed: int):
        super().__init__(cfg, vocab_size, seed)
        self.module = self.model
        self.zero_stage = cfg.zero_stage
        # DeepSpeed reads the rank layout from the environment; the group's process group already exists.
        os.environ.update({"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": "0"})
        os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
        import_deepspeed()

    def ds_config(self) -> dict:
        cfg = self.cfg
        conf = {"train_micro_batch_size_per_gpu": cfg.micro_batch_size, "gradient_accumulation_steps": 1,
                "train_batch_size": cfg.micro_batch_size * self.world_size, "gradient_clipping": cfg.grad_clip,
                "zero_optimization": {"stage": self.zero_stage}, "steps_per_print": 10 ** 9,
                "wall_clock_breakdown": False}
        if cfg.model.dtype == "bfloat16":
            conf["bf16"] = {"enabled": True}
        elif cfg.model.dtype == "float16":
            conf["fp16"] = {"enabled": True}
        return conf

    def setup(self) -> int:
        import torch.distributed as dist

        deepspeed = import_deepspeed()
        if not dist.is_initialized():  # a group of one rank started without a process group
            deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        self.module.to(self.device)
        n_params = sum(p.numel() for p in self.module.parameters())
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.model, self.optimizer, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer,
                                                                config=self.ds_config())
        self.module = self.model.module
        return n_params

    def _backward(self, loss: torch.Tensor, boundary: bool) -> None:
        self.model.set_gradient_accumulation_boundary(boundary)
        self.model.backward(loss)

    def optimizer_step(self, grad_clip: float) -> float:
        """engine.step() (clips with `gradient_clipping`, zeroes grads); returns the pre-clip global norm."""
        self.model.set_gradient_accumulation_boundary(True)
        self.model.step()
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def full_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        params = dict(self.module.named_parameters(remove_duplicate=False))
        buffers = dict(self.module.named_buffers())
        gathered = nullcontext()
        if self.zero_stage >= 3:
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)
        with gathered:
            if self.rank != 0:
                return None
            return {name: (params[name] if name in params else buffers[name]).detach().cpu().clone()
                    for name in self.module.state_dict().keys()}

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, path: str, extra: Optional[dict] = None, export_dir: Optional[str] = None) -> str:
        super().save_checkpoint(path, extra)
        if export_dir is not None:
            self.export_hf(export_dir)
        return path

    def offload(self) -> None:
        """DeepSpeed manages its own memory (its offload_optimizer / offload_param config)."""

    def onload(self) -> None:
        pass
