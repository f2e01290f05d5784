"""DeepSpeedActorWorker: the reasoning actor trained with DeepSpeed ZeRO (stage `actor.zero_stage`).

Everything model- and loss-related is ActorWorker's; this class only swaps the engine:
- `setup` wraps the policy in `deepspeed.initialize` (client AdamW with actor.lr / weight_decay,
  `gradient_clipping` = actor.grad_clip, ZeRO stage from the config) reusing the group's process group;
- rlinf's own micro-batching drives accumulation: each micro-batch calls `engine.backward(loss)` and the
  last one of a pass marks the accumulation boundary, after which `optimizer_step` calls `engine.step()`
  (the engine's gradient_accumulation_steps is 1, so it never rescales the already-normalised loss);
- weights leave through the object store (`export_weights`) or the resharding engine (`send_weights`):
  stages 1/2 hold full parameters on every rank and ZeRO-3 gathers them with `GatheredParameters`; each
  rank then sends the FSDP2-style Shard(0) slice the resharding plan expects from it;
- checkpoints are DeepSpeed's own (`engine.save_checkpoint` / `load_checkpoint`) plus the torch RNG.
On a machine without CUDA, `DS_ACCELERATOR=cpu` is set before deepspeed is imported.
"""

import os
from contextlib import nullcontext
from typing import Callable, Dict, List, Sequence

import ray
import torch

from rlinf.config.schema import ActorConfig, AlgorithmConfig
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.deepspeed_common import DeepSpeedCheckpointMixin, import_deepspeed


class DeepSpeedActorWorker(DeepSpeedCheckpointMixin, ActorWorker):
    """ActorWorker whose model is a DeepSpeed engine (`self.model`); `self.module` is the wrapped HF model."""

    def __init__(self, cfg: ActorConfig, algo: AlgorithmConfig, vocab_size: int, seed: int, sampling=1.0):
        super().__init__(cfg, algo, vocab_size, seed, sampling)
        self.module = self.model
        self.zero_stage = int(getattr(cfg, "zero_stage", 2))
        # DeepSpeed reads the rank layout from the environment; the group's process group already exists.
        os.environ.update({"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": "0"})
        os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
        import_deepspeed()

    def ds_config(self) -> dict:
        cfg = self.cfg
        conf = {
            "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
            "gradient_accumulation_steps": 1,  # rlinf marks the boundary itself (see train_epochs)
            "train_batch_size": cfg.micro_batch_size * self.world_size,
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {"stage": self.zero_stage},
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False,
        }
        dtype = cfg.model.dtype
        if dtype == "bfloat16":
            conf["bf16"] = {"enabled": True}
        elif dtype == "float16":
            conf["fp16"] = {"enabled": True}
        return conf

    def setup(self) -> int:
        deepspeed = import_deepspeed()
        import torch.distributed as dist

        if not dist.is_initialized():  # a group of one rank started without a process group
            deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        self.module.to(self.device)
        n_params = sum(p.numel() for p in self.module.parameters())
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        engine, optimizer, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer,
                                                       config=self.ds_config())
        self.model, self.optimizer = engine, optimizer
        self.module = engine.module
        return n_params

    # ---- training -------------------------------------------------------------------------------
    def _backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)

    def accumulate(self, mbs: List[Dict[str, torch.Tensor]], epochs: int, grad_clip: float,
                   micro_step: Callable[[Dict[str, torch.Tensor]], Dict[str, float]],
                   summed: Sequence[str] = ()) -> Dict[str, float]:
        n = len(mbs)  # padded or packed micro-batches (FSDPTrainWorker.split_micro_batches)
        count = [0]

        def step(mb):  # the pass's last micro-batch is the accumulation boundary (gradients reduced, step)
            self.model.set_gradient_accumulation_boundary(count[0] % n == n - 1)
            count[0] += 1
            return micro_step(mb)

        return super().accumulate(mbs, epochs, grad_clip, step, summed)

    def optimizer_step(self, grad_clip: float) -> float:
        """engine.step() (clips with `gradient_clipping`, zeroes grads); returns the pre-clip global norm."""
        self.model.set_gradient_accumulation_boundary(True)
        self.model.step()
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    # ---- residency (the schedule decides when: rlinf.runners.residency) ----------------------------
    def offload(self) -> None:
        """DeepSpeed's own `offload_states` (parameters, gradients, optimizer state to host memory); a no-op
        on CPU devices. Untested here (no GPU): DeepSpeed documents it for ZeRO stage 3."""
        if self.device.type != "cpu":
            self.model.offload_states()

    def onload(self) -> None:
        if self.device.type != "cpu":
            self.model.reload_states()

    # ---- weights out ----------------------------------------------------------------------------
    def _gathered(self, params: List[torch.nn.Parameter]):
        if self.zero_stage < 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    @staticmethod
    def _shape(p: torch.Tensor):
        return tuple(getattr(p, "ds_shape", p.shape))

    def export_weights(self) -> List:
        """Full weights (a collective under ZeRO-3); rank 0 returns [ObjectRef of {name: array}]."""
        module = self.module
        params = dict(module.named_parameters(remove_duplicate=False))
        buffers = dict(module.named_buffers())
        tied = getattr(module.config, "tie_word_embeddings", False)
        state = {}
        with self._gathered(list(module.parameters())):
            if self.rank == 0:
                for name in module.state_dict().keys():
                    if tied and name == "lm_head.weight":
                        continue
                    t = params[name] if name in params else buffers[name]
                    full = t.detach().cpu().clone()
                    state[name] = full if full.dtype == torch.bfloat16 else full.numpy()
        return [ray.put(state)] if self.rank == 0 else []

    def setup_reshard(self, peer_group: str, num_replicas: int, cfg, handles: List) -> None:
        from rlinf.reshard import ReshardSource, SourceLayout, TargetLayout
        from rlinf.reshard.plan import make_plan

        plan = make_plan(((n, self._shape(p), p.dtype) for n, p in self.module.named_parameters()),
                         SourceLayout(self.world_size), TargetLayout(num_replicas, 1))
        self.reshard = ReshardSource(plan, self, peer_group, cfg.bucket_mb, cfg.pipeline_depth, cfg.timeout_s)
        self.reshard.attach(handles)

    def send_weights(self, version: int) -> int:
        """Each rank sends its Shard(0) slice of the full parameters (the layout the plan was made for)."""
        named = dict(self.module.named_parameters())
        with self._gathered(list(named.values())):
            local = {}
            for name, p in named.items():
                box = self.reshard.plan.src_box(name, self.rank)
                if box is None:
                    continue
                t = p.detach()
                if box:
                    t = t[box[0][0]:box[0][1]]
                local[name] = t.clone() if self.zero_stage >= 3 else t
            return self.reshard.send(local, version)


__all__ = ["DeepSpeedActorWorker"]
