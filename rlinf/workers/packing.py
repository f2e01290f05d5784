"""Sequence packing: padding removed, rows packed into micro-batches by a token budget, outputs unpacked.

The padded layout (`rlinf.workflows.batching.build_lm_batch`) is
    input_ids, attention_mask, position_ids [N, W]   prompt (left-padded, P columns) + response (T columns)
    response_mask, ... [N, T]                       per response column
A row's *kept* tokens are those with attention_mask 1; their count is the row's length l_i.

Packing (`packed_micro_batches`):
1. Bins. Rows go into micro-batches of at most `budget` kept tokens by first-fit-decreasing
   (`pack_bins`): longest row first, each into the first bin it fits, else a new bin; a row longer than
   the budget gets a bin of its own (the only way a bin exceeds the budget). FFD uses at most
   11/9 OPT + 6/9 bins (Dosa 2007). When data-parallel ranks must run the same number of forwards
   (FSDP2 all-gathers once per forward), `min_bins` splits the fullest bins until there are that many.
2. Layout. A bin of r rows becomes one sequence [1, L], L = sum of its rows' l_i: each row's kept tokens
   in order, position ids restarting at 0 per row (equal to the padded layout's cumsum - 1 on kept
   tokens), and attention kept within each row: a block-diagonal causal mask (`packed_attention`).
3. Gather. The output for response column t of a row is read at the packed position that predicts that
   token: the previous kept token of the same row (`pack_src` -> `pack_dst` = local_row * T + t). A
   response column whose token is not kept (padding after EOS), or that has no earlier kept token in
   its row, gets 0 in the unpacked [r, T] layout (`unpack`); the response mask zeroes it downstream.

Attention backends (model.config._attn_implementation):
- sdpa: a boolean [1, 1, L, L] mask, True where query q may attend key k: same row and k <= q.
- eager: the same as an additive float mask (0 / dtype min).
- anything else (flash_attention_2 / 3, flex_attention, kernels): no mask; position ids restart per
  sequence and the flash varlen kwargs cu_seq_lens_q/k, max_length_q/k are passed, which transformers'
  flash path turns into flash_attn_varlen_func (no L x L mask at all). Documented, not tested on CPU.
transformers >= 4.53 would also infer the block-diagonal mask from restarting position ids when
attention_mask is None; rlinf passes the boundaries explicitly (the transformers padding-free guide
recommends that: the inference does not hold for linear-attention models or under compile).

Data-parallel balance (`balanced_partition`): rows split into `parts` equal-count shards with nearly
equal token sums, so every rank packs about the same number of tokens.
"""

from bisect import bisect_left
from typing import Dict, List, Optional, Sequence

import torch

# ----------------------------------------------------------------------------- partition over ranks
def balanced_partition(weights: Sequence[int], parts: int, refine_steps: Optional[int] = None) -> List[List[int]]:
    """Indices 0..n-1 split into `parts` lists of exactly n / parts indices each (n divisible by parts),
    with token sums S_j = sum of weights[i] over part j nearly equal. Each list is sorted.

    Algorithm (sorted-block LPT, then pairwise swaps):
    1. Sort weights descending, w_(1) >= ... >= w_(n); cut into n / parts blocks of `parts` consecutive
       weights. For each block, its heaviest weight goes to the currently lightest part, its second
       heaviest to the second lightest, ...: every part takes one row per block (equal counts).
    2. Swaps: while the heaviest part H and the lightest part L (spread d = S_H - S_L) hold x in H, y in L
       with 0 < x - y < d, swap the pair whose x - y is closest to d / 2 (at most `refine_steps`, default
       4 n). Both new sums lie strictly inside (S_L, S_H), so the spread never grows, and sum_j S_j^2
       strictly falls, so it terminates.

    Bound: max_j S_j - min_j S_j <= max over blocks b of (w_first(b) - w_last(b)) <= w_max - w_min.
    Proof of step 1: with loads sorted L_1 <= ... <= L_k before a block a_1 >= ... >= a_k, any two new
    loads differ by (L_i - L_j) + (a_i - a_j): for i > j that is <= the old spread D (a_i <= a_j), for
    i < j it is <= a_1 - a_k (L_i <= L_j); so D_new <= max(D, block range), and D_0 = 0. Step 2 keeps it.
    """
    n = len(weights)
    if parts < 1 or n % parts:
        raise ValueError(f"{n} rows cannot be split into {parts} equal parts")
    order = sorted(range(n), key=lambda i: (-weights[i], i))
    members: List[List[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for start in range(0, n, parts):
        by_load = sorted(range(parts), key=lambda j: (loads[j], j))
        for j, i in zip(by_load, order[start:start + parts]):
            members[j].append(i)
            loads[j] += weights[i]
    _refine(weights, members, loads, 4 * n if refine_steps is None else refine_steps)
    return [sorted(m) for m in members]


def _refine(weights: Sequence[int], members: List[List[int]], loads: List[int], steps: int) -> None:
    """Step 2 of `balanced_partition`, in place."""
    for _ in range(steps):
        hi = max(range(len(loads)), key=lambda j: (loads[j], -j))
        lo = min(range(len(loads)), key=lambda j: (loads[j], j))
        d = loads[hi] - loads[lo]
        if d <= 0:
            return
        light = sorted(members[lo], key=lambda i: weights[i])
        light_w = [weights[i] for i in light]
        best = None  # (|d - 2 delta|, position in members[hi], index in light)
        for p, x in enumerate(members[hi]):
            q = bisect_left(light_w, weights[x] - d / 2)
            for c in (q - 1, q):
                if 0 <= c < len(light):
                    delta = weights[x] - light_w[c]
                    if 0 < delta < d and (best is None or abs(d - 2 * delta) < best[0]):
                        best = (abs(d - 2 * delta), p, c)
        if best is None:
            return
        _, p, c = best
        x, y = members[hi][p], light[c]
        members[hi][p] = y
        members[lo][members[lo].index(y)] = x
        delta = weights[x] - weights[y]
        loads[hi] -= delta
        loads[lo] += delta


# ----------------------------------------------------------------------------- micro-batch bins
def pack_bins(lengths: Sequence[int], budget: int, min_bins: int = 0) -> List[List[int]]:
    """Row indices grouped into bins of total length <= `budget` by first-fit-decreasing; a row longer
    than `budget` is alone in its bin. Then, while fewer than `min_bins` bins exist, the bin with the most
    tokens among those with >= 2 rows is split in two (`_split`), which keeps every bin within the budget.
    Raises ValueError when min_bins exceeds the number of rows. Rows inside a bin keep index order."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    if min_bins > len(lengths):
        raise ValueError(f"cannot make {min_bins} micro-batches from {len(lengths)} rows")
    bins: List[List[int]] = []
    room: List[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    while len(bins) < min_bins:
        b = max((b for b in range(len(bins)) if len(bins[b]) > 1), key=lambda b: budget - room[b])
        first, second = _split(bins[b], lengths)
        bins[b:b + 1] = [first, second]
        room[b:b + 1] = [budget - sum(lengths[i] for i in first), budget - sum(lengths[i] for i in second)]
    return [sorted(b) for b in bins]


def _split(rows: List[int], lengths: Sequence[int]) -> List[List[int]]:
    """Two non-empty halves of nearly equal length (longest first, each row into the lighter half)."""
    halves: List[List[int]] = [[], []]
    sums = [0, 0]
    for i in sorted(rows, key=lambda i: (-lengths[i], i)):
        j = 0 if (sums[0], len(halves[0])) <= (sums[1], len(halves[1])) else 1
        halves[j].append(i)
        sums[j] += lengths[i]
    return halves


# ----------------------------------------------------------------------------- packed layout
def row_lengths(batch: Dict[str, torch.Tensor]) -> List[int]:
    """Kept tokens (attention_mask 1) per row."""
    return [int(x) for x in batch["attention_mask"].sum(1)]


def pack_rows(batch: Dict[str, torch.Tensor], rows: Sequence[int]) -> Dict[str, torch.Tensor]:
    """The micro-batch of `rows` (indices into `batch`): every row tensor of `batch` sliced to them
    ([r, ...], the padded layout the losses read) plus the packed layout (module docstring, step 2-3):
    pack_input_ids / pack_position_ids [1, L], pack_seq_lens [r], pack_src / pack_dst [K] (K response
    tokens with an output), pack_rows [r] (the rows' indices in `batch`)."""
    idx = torch.as_tensor(list(rows), dtype=torch.long, device=batch["input_ids"].device)
    mb = {k: v[idx] for k, v in batch.items()}
    keep = mb["attention_mask"].bool()
    T = mb["response_mask"].shape[1]
    P = keep.shape[1] - T
    lens = keep.sum(1)
    pos = keep.long().cumsum(1) - 1  # index of each kept token within its row
    offsets = lens.cumsum(0) - lens
    has_out = keep[:, P:] & (pos[:, P:] >= 1)
    r = idx.numel()
    dst = torch.arange(r * T, device=idx.device).view(r, T)
    mb.update(
        pack_rows=idx,
        pack_input_ids=mb["input_ids"][keep].unsqueeze(0),
        pack_position_ids=pos[keep].unsqueeze(0),
        pack_seq_lens=lens,
        pack_src=(offsets[:, None] + pos[:, P:] - 1)[has_out],
        pack_dst=dst[has_out],
    )
    return mb


def packed_micro_batches(batch: Dict[str, torch.Tensor], budget: int, min_bins: int = 0) -> List[Dict[str, torch.Tensor]]:
    """`batch` packed into micro-batches of at most `budget` kept tokens (`pack_bins`, `pack_rows`)."""
    return [pack_rows(batch, rows) for rows in pack_bins(row_lengths(batch), budget, min_bins)]


def is_packed(mb: Dict[str, torch.Tensor]) -> bool:
    return "pack_input_ids" in mb


def packed_attention(seq_lens: torch.Tensor, impl: str, dtype: torch.dtype) -> Dict[str, object]:
    """Model kwargs that keep attention within each packed sequence of lengths `seq_lens` (module
    docstring): {'attention_mask': 4D mask} for sdpa / eager, flash varlen kwargs otherwise."""
    device = seq_lens.device
    if impl in ("sdpa", "eager"):
        seq = torch.repeat_interleave(torch.arange(seq_lens.numel(), device=device), seq_lens)
        L = seq.numel()
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
        allowed = (seq[:, None] == seq[None, :]) & causal
        if impl == "eager":
            mask = torch.zeros(L, L, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
            return {"attention_mask": mask[None, None]}
        return {"attention_mask": allowed[None, None]}
    cu = torch.nn.functional.pad(seq_lens.cumsum(0), (1, 0)).to(torch.int32)
    longest = int(seq_lens.max())
    return {"attention_mask": None, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest}


def attn_implementation(model: torch.nn.Module) -> str:
    """The attention backend of an HF model (or of a wrapper whose `.model` is one, or of a DeepSpeed
    engine's `.module`)."""
    model = getattr(model, "module", model)
    config = getattr(model, "config", None)
    if config is None:
        config = model.model.config
    return config._attn_implementation


def packed_inputs(model: torch.nn.Module, mb: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Keyword arguments of the model's forward over a packed micro-batch: input_ids and position_ids
    [1, L] and the attention boundaries of `packed_attention`."""
    dtype = next(model.parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    return {"input_ids": mb["pack_input_ids"], "position_ids": mb["pack_position_ids"],
            **packed_attention(mb["pack_seq_lens"], attn_implementation(model), dtype)}


def unpack(values: torch.Tensor, mb: Dict[str, torch.Tensor]) -> torch.Tensor:
    """[K, ...] outputs at the micro-batch's response positions (in pack_src order) -> [r, T, ...] in the
    padded layout, 0 where a column has no output. Differentiable in `values`."""
    r, T = mb["response_mask"].shape
    out = values.new_zeros((r * T,) + tuple(values.shape[1:]))
    return out.index_put((mb["pack_dst"],), values).view((r, T) + tuple(values.shape[1:]))


def merge_rows(outputs: List[torch.Tensor], mbs: List[Dict[str, torch.Tensor]]) -> torch.Tensor:
    """Per-micro-batch row outputs [r_b, ...] back to the whole batch's row order [N, ...]: by pack_rows
    for packed micro-batches, else concatenated (padded micro-batches are contiguous slices)."""
    stacked = torch.cat(outputs)
    if not mbs or not is_packed(mbs[0]):
        return stacked
    rows = torch.cat([mb["pack_rows"] for mb in mbs])
    out = torch.empty_like(stacked)
    out[rows] = stacked
    return out


__all__ = ["attn_implementation", "balanced_partition", "is_packed", "merge_rows", "pack_bins",
           "pack_rows", "packed_attention", "packed_inputs", "packed_micro_batches", "row_lengths", "unpack"]
