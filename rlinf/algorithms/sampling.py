"""DAPO dynamic sampling: keep only groups whose rewards carry a learning signal.

A group (the samples of one prompt / initial state, sharing `group_index`) whose scores are all
equal has zero group-relative advantage everywhere, so it only dilutes the batch. The runner drops
those groups and samples more prompts until the batch is full; this module only decides which to keep.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dynamic_sampling_mask(scores: Tensor, group_index: Tensor, atol: float = 0.0) -> Tensor:
    """[B] bool keep-mask: keep_i = (max_g - min_g > atol) for the group g of sample i.

    Groups whose scores are all equal (within `atol`), including groups of size 1, are dropped.
    """
    _, inv = torch.unique(group_index, return_inverse=True)
    G = int(inv.max()) + 1 if inv.numel() else 0
    s = scores.to(torch.promote_types(scores.dtype, torch.float32))
    hi = torch.full((G,), float("-inf"), dtype=s.dtype, device=s.device).scatter_reduce(0, inv, s, "amax")
    lo = torch.full((G,), float("inf"), dtype=s.dtype, device=s.device).scatter_reduce(0, inv, s, "amin")
    return ((hi - lo) > atol)[inv]
