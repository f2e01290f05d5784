"""FSDPTrainWorker: what the actor and critic share — FSDP2 sharding, the optimizer step,
group-averaged metrics, torch.distributed.checkpoint save/load and offload/onload.

Subclasses set `self.model` (an HF-style module whose decoder layers are `model.model.layers`)
before `setup()` and implement their own update.

Micro-batches (`split_micro_batches`): `micro_batch_size` padded rows each, or, with a token budget
(`actor.max_tokens_per_micro_batch` / `critic.max_tokens_per_micro_batch`), packed rows without padding
(`rlinf.workers.packing`). Every rank of the group runs the same number of micro-batches (FSDP2 gathers
parameters once per forward), so the packed count is agreed by an all-reduce (max) first.
"""

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

from rlinf.scheduler import Worker
from rlinf.workers.packing import pack_bins, pack_rows, row_lengths

logger = logging.getLogger(__name__)


def micro_batches(batch: Dict[str, torch.Tensor], size: int) -> List[Dict[str, torch.Tensor]]:
    n = batch["input_ids"].shape[0]
    return [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]


def valid_count(mask: torch.Tensor, loss_agg: str) -> torch.Tensor:
    """Valid tokens (token-mean), or valid sequences (the seq-mean modes), of a [B, T] mask."""
    return (mask.sum(1) > 0).sum() if loss_agg != "token-mean" else mask.sum()


def loss_denominator(mask: torch.Tensor, loss_agg: str) -> float:
    """Whole-batch divisor for micro-batch accumulation: `valid_count`, at least 1."""
    return max(float(valid_count(mask, loss_agg)), 1.0)


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class FSDPTrainWorker(Worker):
    model: torch.nn.Module
    optimizer: Optional[torch.optim.Optimizer] = None
    gather_once = False  # set by shard_and_build_optimizer (actor/critic.fsdp_gather_once, more than one rank)

    def shard_model(self) -> int:
        """fully_shard each decoder layer, then the root, over this group's ranks (more than one); returns #params."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.model.to(self.device)
        if self.world_size > 1:  # one rank has nothing to shard; FSDP2 would only add overhead
            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for layer in self.model.model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(self.model, mesh=mesh)
        return sum(p.numel() for p in self.model.parameters())

    def shard_and_build_optimizer(self, lr: float, weight_decay: float, gather_once: bool = False) -> int:
        """`shard_model`, then AdamW over the (sharded) parameters; returns #params. `gather_once`: see
        `_training_pass`."""
        n_params = self.shard_model()
        self.gather_once = gather_once and self.world_size > 1
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        return n_params

    def optimizer_step(self, grad_clip: float) -> float:
        """Clip the global gradient norm (0: off), step, zero grads; returns the pre-clip norm."""
        norm = 0.0
        if grad_clip > 0:
            total = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
            norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def split_micro_batches(self, batch: Dict[str, torch.Tensor], micro_batch_size: int,
                            max_tokens: Optional[int] = None) -> List[Dict[str, torch.Tensor]]:
        """Padded micro-batches of `micro_batch_size` rows (max_tokens None), else packed ones of at most
        `max_tokens` kept tokens each (a longer row alone), as many on every rank of the group."""
        if max_tokens is None:
            return micro_batches(batch, micro_batch_size)
        lengths = row_lengths(batch)
        bins = pack_bins(lengths, max_tokens)
        if dist.is_initialized() and dist.get_world_size() > 1:
            count = torch.tensor([len(bins)], dtype=torch.long, device=self.device)
            dist.all_reduce(count, op=dist.ReduceOp.MAX)
            if int(count) > len(bins):
                bins = pack_bins(lengths, max_tokens, min_bins=int(count))
        return [pack_rows(batch, rows) for rows in bins]

    def train_epochs(self, batch: Dict[str, torch.Tensor], micro_batch_size: int, epochs: int, grad_clip: float,
                     micro_step: Callable[[Dict[str, torch.Tensor]], Dict[str, float]],
                     max_tokens: Optional[int] = None, summed: Sequence[str] = ()) -> Dict[str, float]:
        """`epochs` passes over `batch` in micro-batches (`split_micro_batches`), accumulating gradients
        (`micro_step` runs forward and backward and returns scalar metrics); one optimizer step per pass.
        Returns the metrics over the batch plus `grad_norm` of the last step (not yet averaged over ranks):
        see `accumulate`."""
        return self.accumulate(self.split_micro_batches(batch, micro_batch_size, max_tokens), epochs, grad_clip,
                               micro_step, summed)

    def accumulate(self, mbs: List[Dict[str, torch.Tensor]], epochs: int, grad_clip: float,
                   micro_step: Callable[[Dict[str, torch.Tensor]], Dict[str, float]],
                   summed: Sequence[str] = ()) -> Dict[str, float]:
        """The training passes of `train_epochs` over the micro-batches `mbs`. Metrics, averaged over passes:
        keys in `summed` (a micro-batch's share of a whole-batch loss, already divided by the whole-batch
        denominator) are summed over a pass's micro-batches, so they equal the whole batch's loss however
        it was split; the others (masked means within a micro-batch) are averaged with weights w_b = the
        micro-batch's valid response tokens (1 each without a response_mask), which makes token means
        exact too."""
        self.model.train()
        sums: Dict[str, float] = {}
        weights: Dict[str, float] = {}
        grad_norm = 0.0
        for _ in range(epochs):
            with self._training_pass() as before_micro_step:
                for i, mb in enumerate(mbs):
                    before_micro_step(last=i == len(mbs) - 1)
                    w = float(mb["response_mask"].sum()) if "response_mask" in mb else 1.0
                    for k, v in micro_step(mb).items():
                        scale = 1.0 if k in summed else w
                        sums[k] = sums.get(k, 0.0) + scale * v
                        weights[k] = weights.get(k, 0.0) + (1.0 / len(mbs) if k in summed else w)
            grad_norm = self.optimizer_step(grad_clip)
        out = {k: v / weights[k] if weights[k] > 0 else 0.0 for k, v in sums.items()}
        out["grad_norm"] = grad_norm
        return out

    @contextmanager
    def _training_pass(self):
        """One pass of forward/backward over the micro-batches before an optimizer step. By default FSDP2
        gathers each layer's parameters for every forward and again for every backward, and reduce-scatters
        the gradients after every backward: 2 all-gathers and 1 reduce-scatter per layer per micro-batch.
        With `gather_once` (actor/critic.fsdp_gather_once) the pass gathers each layer once, keeps it
        gathered through every forward and backward (no reshard after forward; after backward only on the
        last micro-batch) and reduce-scatters the accumulated gradients once, after the last backward:
        1 all-gather and 1 reduce-scatter per layer per pass. The cost is memory: full parameters and
        full gradients on every rank while the pass runs (as ZeRO-2 during the update). The gradients are
        the same sums, added in another order. Yields `before_micro_step(last)`."""
        if not self.gather_once:
            yield lambda last: None
            return

        def before_micro_step(last: bool) -> None:
            self.model.set_requires_gradient_sync(last)
            self.model.set_reshard_after_backward(last)

        self.model.set_reshard_after_forward(False)
        try:
            yield before_micro_step
        finally:  # FSDP2's defaults again: layers reshard after forward (forwards without gradients), the root not
            self.model.set_reshard_after_forward(True)
            self.model.set_reshard_after_forward(False, recurse=False)
            self.model.set_requires_gradient_sync(True)
            self.model.set_reshard_after_backward(True)

    def group_denominator(self, mask: torch.Tensor, loss_agg: str) -> float:
        """The loss divisor of this rank's micro-batches: the group's whole-batch count (valid tokens, or
        valid sequences: `loss_denominator` of all ranks' rows) divided by the number of ranks R. Each rank's
        loss is then sum_rank(l) / (D / R), and the gradient all-reduce averages over ranks, so the
        step's gradient is that of sum_all(l) / D: the global batch's aggregate, however its rows were
        sharded over ranks or split into micro-batches."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return loss_denominator(mask, loss_agg)
        t = valid_count(mask, loss_agg).to(device=self.device, dtype=torch.float64).reshape(1)
        dist.all_reduce(t)
        return max(float(t), 1.0) / dist.get_world_size()

    def group_mean(self, metrics: Dict[str, float]) -> Dict[str, float]:
        """Average scalar metrics over the group's ranks (every rank holds the same keys)."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        t /= dist.get_world_size()
        return {k: float(v) for k, v in zip(keys, t)}

    # ---- checkpoints (torch.distributed.checkpoint: each rank writes its own shards) -------------
    def save_checkpoint(self, path: str, extra: Optional[dict] = None) -> str:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        self.save_worker_state(path, extra)
        return path

    def save_worker_state(self, path: str, extra: Optional[dict]) -> None:
        """What every backend's checkpoint adds: this rank's torch RNG, and rank 0's `extra` as JSON."""
        torch.save({"torch_rng": torch.get_rng_state()}, Path(path) / f"rng_rank{self.rank}.pt")
        if self.rank == 0 and extra is not None:
            (Path(path) / "worker_state.json").write_text(json.dumps(extra))

    def load_worker_state(self, path: str) -> dict:
        rng = torch.load(Path(path) / f"rng_rank{self.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["torch_rng"])
        extra = Path(path) / "worker_state.json"
        return json.loads(extra.read_text()) if extra.exists() else {}

    def checkpoint_mismatch(self, path: str) -> Optional[str]:
        """None when the checkpoint at `path` holds exactly this model's and optimizer's tensors (names,
        shapes, dtypes; read from its metadata, nothing loaded); else the first difference."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        from rlinf.utils.checkpoint_layout import dcp_layout, first_mismatch, layout_of

        if not (Path(path) / ".metadata").exists():
            return f"{path} holds no torch.distributed.checkpoint (.metadata missing)"
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return first_mismatch(layout_of({"model": model_sd, "optim": optim_sd}), dcp_layout(path))

    def load_checkpoint(self, path: str) -> dict:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        if not Path(path).is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} not found")
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        return self.load_worker_state(path)

    def load_model_weights(self, path: str) -> None:
        """Only the model weights of the torch.distributed.checkpoint at `path` (its optimizer state and RNG
        are not read): the start of a run from another run's checkpoint (`actor.init_checkpoint`). The
        checkpoint's layout may come from any number of ranks."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"model": get_model_state_dict(self.model)}
        dcp.load(state, checkpoint_id=path)
        set_model_state_dict(self.model, state["model"])

    def full_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """The full (unsharded) weights on rank 0, None on the others (a collective: every rank calls)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.rank == 0 else None

    # ---- colocated placement: free the device between phases ------------------------------------
    def offload(self) -> None:
        """Move parameters, gradients and optimizer state to CPU (a no-op on CPU devices)."""
        self._move("cpu")

    def onload(self) -> None:
        self._move(self.device)

    def device_memory_bytes(self) -> int:
        """Bytes the allocator holds on this rank's accelerator (0 on CPU): what an offload frees."""
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

    def state_digest(self) -> Dict[str, float]:
        """Sum and sum of squares of every local parameter and optimizer-state tensor, in float64: equal
        digests before an offload and after the onload say the state came back unchanged."""
        tensors = [p.detach() for p in self.model.parameters()]
        for state in (self.optimizer.state.values() if self.optimizer else []):
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
        return {"sum": float(sum(t.double().sum() for t in local)),
                "sq": float(sum(t.double().square().sum() for t in local))}

    def _move(self, device) -> None:
        if self.device.type == "cpu":
            return
        self.model.to(device)
        for state in (self.optimizer.state.values() if self.optimizer else []):
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    state[k] = v.to(device, non_blocking=True)
        if device == "cpu":
            torch.cuda.empty_cache()


__all__ = ["FSDPTrainWorker", "loss_denominator", "micro_batches", "to_device"]
