"""Worker classes and a tiny tensor-parallel block for the resharding tests (importable by Ray workers).

`TinyLM` has HF Qwen2 parameter names (one decoder layer, tied LM head) so the vLLM splits apply;
`block_forward` runs it from full weights (tp_size 1) or from one tp rank's slices, with the
column/row-parallel all-reduces and a vocab-parallel embedding / LM head over gloo.
"""

import os
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from rlinf.reshard import ReshardSource, ReshardTarget, SourceLayout, TargetLayout, plan_for_module
from rlinf.scheduler import Worker

P = "model.layers.0."


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int = 37, hidden: int = 16, inter: int = 48, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        lin = torch.nn.Linear
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(vocab, hidden)
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        for n in ("q", "k", "v"):
            setattr(layer.self_attn, f"{n}_proj", lin(hidden, hidden, bias=True))
        layer.self_attn.o_proj = lin(hidden, hidden, bias=False)
        layer.mlp = torch.nn.Module()
        layer.mlp.gate_proj, layer.mlp.up_proj = lin(hidden, inter, bias=False), lin(hidden, inter, bias=False)
        layer.mlp.down_proj = lin(inter, hidden, bias=False)
        self.model.layers = torch.nn.ModuleList([layer])
        self.model.norm = torch.nn.Module()
        self.model.norm.weight = torch.nn.Parameter(1 + 0.1 * torch.randn(hidden))


def block_forward(w: Dict[str, torch.Tensor], ids: torch.Tensor, head_dim: int, vocab: int, tp_size: int = 1,
                  tp_rank: int = 0, vocab_chunk: int = 0, group=None) -> torch.Tensor:
    """Logits [T, vocab] of one causal attention + SwiGLU block with a tied, vocab-parallel LM head."""
    def reduce(x):
        if tp_size > 1:
            dist.all_reduce(x, group=group)
        return x

    emb = w["model.embed_tokens.weight"]
    lo = tp_rank * vocab_chunk
    local = ids - lo
    hit = (local >= 0) & (local < emb.shape[0])
    x = reduce(torch.where(hit[:, None], emb[local.clamp(0, max(emb.shape[0] - 1, 0))] if emb.shape[0] else 0.0,
                           torch.zeros(ids.shape[0], emb.shape[1])))
    a = P + "self_attn."
    q, k, v = (x @ w[a + f"{n}_proj.weight"].T + w[a + f"{n}_proj.bias"] for n in "qkv")
    heads, t = q.shape[1] // head_dim, ids.shape[0]
    q, k, v = (z.view(t, heads, head_dim).transpose(0, 1) for z in (q, k, v))
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(t, -1)
    h = x + reduce(att @ w[a + "o_proj.weight"].T)
    m = P + "mlp."
    h = h + reduce((F.silu(h @ w[m + "gate_proj.weight"].T) * (h @ w[m + "up_proj.weight"].T)) @ w[m + "down_proj.weight"].T)
    h = h * w["model.norm.weight"]
    logits = h @ emb.T  # this rank's vocab columns
    if tp_size == 1:
        return logits
    padded = torch.zeros(t, vocab_chunk)
    padded[:, :logits.shape[1]] = logits
    parts = [torch.empty_like(padded) for _ in range(tp_size)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat(parts, dim=1)[:, :vocab]


class ReshardSourceWorker(Worker):
    """An actor rank: TinyLM sharded with FSDP2 over this group's ranks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.model = TinyLM(seed=seed)
        self.sources: Dict[str, ReshardSource] = {}

    def setup(self) -> None:
        """fully_shard over this group's ranks (its process group exists once __init__ has run)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(self.model, mesh=init_device_mesh("cpu", (self.world_size,)))

    def make_source(self, key: str, peer: str, replicas: int, tp: int, bucket_mb: float, timeout_s: float = 60.0):
        plan = plan_for_module(self.model, SourceLayout(self.world_size), TargetLayout(replicas, tp))
        self.sources[key] = ReshardSource(plan, self, peer, bucket_mb=bucket_mb, timeout_s=timeout_s)
        return plan

    def attach(self, key: str, handles):
        return self.sources[key].attach(handles)

    def send(self, key: str, version: Optional[int] = None) -> int:
        return self.sources[key].send(dict(self.model.named_parameters()), version)

    @torch.no_grad()
    def perturb(self, scale: float) -> None:
        for p in self.model.parameters():
            p.to_local().add_(scale * torch.randn_like(p.to_local()))

    @torch.no_grad()
    def full_state(self) -> Dict[str, torch.Tensor]:
        return {n: p.full_tensor().clone() for n, p in self.model.named_parameters()}


class ReshardTargetWorker(Worker):
    """A rollout rank: receives into ReshardTargets keyed by name."""

    def __init__(self):
        super().__init__()
        self.targets: Dict[str, ReshardTarget] = {}

    def make_target(self, key: str, plan, peer: str, colocated: bool, bucket_mb: float, timeout_s: float = 60.0,
                    staged: bool = False):
        self.targets[key] = ReshardTarget(plan, self, peer, colocated=colocated, bucket_mb=bucket_mb,
                                          timeout_s=timeout_s, staged=staged)
        return self.targets[key].handle()

    def apply(self, key: str, version: int, timeout_s: float = 30.0) -> int:
        return self.targets[key].apply(version, timeout_s)

    def recv(self, key: str, version: Optional[int] = None, die_after: Optional[int] = None) -> int:
        def maybe_die(src, k):
            if die_after is not None and k >= die_after:
                os._exit(1)
        return self.targets[key].recv(version, on_bucket=maybe_die)

    def tensors(self, key: str) -> Dict[str, torch.Tensor]:
        return {n: t.clone() for n, t in self.targets[key].tensors.items()}

    def tp_forward(self, key: str, ids: torch.Tensor, head_dim: int, vocab: int) -> torch.Tensor:
        target = self.targets[key]
        tp = target.plan.target.tp_size
        split = target.plan.params["model.embed_tokens.weight"].split
        return block_forward(target.tensors, ids, head_dim, vocab, tp, self.rank % tp, split.chunk)

    def close(self, key: str) -> None:
        self.targets.pop(key).close()
