"""LoRA (low-rank adaptation) for the VLA policies: train small adapters on a frozen language model.

A wrapped linear layer with frozen weight W [out, in] (and bias b) computes

    y = W x + b + (alpha / r) * B (A x),      A: [r, in],  B: [out, r],  r = rank

A starts like an nn.Linear weight (Kaiming-uniform), B starts at zero, so at initialisation the
wrapped model computes exactly what the unwrapped one did; only A and B receive gradients.

`apply_lora(model, rank, alpha, lm=..., keep_trainable=...)` wraps the linear layers of the submodule
`lm` whose attribute name is one of `targets` (default: the decoder's q/k/v/o/gate/up/down projections)
and freezes every parameter of `model` except the adapters and the submodules named in
`keep_trainable` (e.g. the projector, the action-chunk embeddings and the value head). A LoRA model's
frozen base is rebuilt identically by every process from the same config / seed / checkpoint, so weight
syncs and checkpoints carry only the trainable tensors (`sync_tensors`, `load_weights`).
"""

import math
from typing import Dict, Iterable, Mapping, Tuple

import torch
from torch import Tensor, nn

DEFAULT_TARGETS: Tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * lora_B(lora_A(x)); `base` frozen, lora_B zero at init.

    The adapters are float32 whatever the base dtype (bf16 bases): x is cast to float32 for the adapter
    branch and its output back to x's dtype.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base, self.rank, self.scaling = base, rank, alpha / rank
        dev = base.weight.device
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=dev, dtype=torch.float32)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=dev, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        for p in self.base.parameters():
            p.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:  # code that reads `proj.weight` (dtype / device probes) sees the base weight
        return self.base.weight

    def forward(self, x: Tensor) -> Tensor:
        delta = self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype))) * self.scaling
        return self.base(x) + delta.to(x.dtype)


def apply_lora(model: nn.Module, rank: int, alpha: float, lm: str, keep_trainable: Iterable[str] = (),
               targets: Iterable[str] = DEFAULT_TARGETS) -> int:
    """Wrap the `targets` linear layers inside `model.get_submodule(lm)` with LoRALinear and freeze all of
    `model` except the adapters and the submodules / parameters named in `keep_trainable` (dotted names
    relative to `model`; names that do not exist, e.g. an absent proprio layer, are skipped).
    Returns the number of wrapped layers (a model with no target layer is an error)."""
    targets = set(targets)
    root = model.get_submodule(lm)
    found = [(name, mod) for name, mod in root.named_modules()
             if isinstance(mod, nn.Linear) and name.rpartition(".")[2] in targets]
    if not found:
        raise ValueError(f"no linear layer named {sorted(targets)} inside '{lm}'")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in found:
        parent_name, _, leaf = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, leaf, LoRALinear(mod, rank, alpha))
    params = dict(model.named_parameters())
    for keep in keep_trainable:
        if keep in params:
            params[keep].requires_grad_(True)
            continue
        try:
            sub = model.get_submodule(keep)
        except AttributeError:  # absent (e.g. no proprio layer without a state observation)
            continue
        for p in sub.parameters():
            p.requires_grad_(True)
    return len(found)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def trainable_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """{name: parameter} of the parameters that train (all of them without LoRA)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def sync_tensors(model: nn.Module) -> Dict[str, Tensor]:
    """What a weight sync or a checkpoint moves: every parameter and persistent buffer
    (`rlinf.reshard.module_tensors`), or, on a LoRA model, only its trainable parameters (the frozen
    base is rebuilt identically on every process)."""
    if has_lora(model):
        return dict(trainable_parameters(model))
    from rlinf.reshard import module_tensors

    return module_tensors(model)


def load_weights(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a full state dict, or on a LoRA model exactly its trainable tensors (anything else is a
    ValueError: a partial dict must name the same tensors as `sync_tensors`)."""
    full = model.state_dict()
    if set(state) == set(full):
        model.load_state_dict(state, strict=True)
        return
    if not has_lora(model):
        raise ValueError(f"state dict keys do not match the model (missing {sorted(set(full) - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - set(full))[:5]})")
    want = set(sync_tensors(model))
    if set(state) != want:
        raise ValueError(f"a LoRA state dict must hold exactly the {len(want)} trainable tensors (missing "
                         f"{sorted(want - set(state))[:5]}, unexpected {sorted(set(state) - want)[:5]})")
    model.load_state_dict(state, strict=False)  # the key sets were checked above
