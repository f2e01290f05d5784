"""Resharding plans: which slice of which parameter goes from which source rank to which target rank.

Pure index arithmetic (torch only for dtypes; no Ray, no process groups). A plan is computed once
from parameter names, shapes and dtypes plus the two layouts, and reused for every sync.

Source layout (`SourceLayout(dp_size)`): FSDP2 `Shard(0)` over `dp_size` ranks, with
`torch.chunk` semantics. For a parameter with `n` rows along dim 0 the chunk is
`c = ceil(n / dp)` rows and source rank `s` holds global rows `[min(s*c, n), min((s+1)*c, n))`, so
the last ranks may hold fewer rows or none (5 rows over 4 ranks: 2, 2, 1, 0). FSDP2 pads the last
chunks internally, but `DTensor.to_local()` returns the unpadded rows, which is what a source rank
hands to the transport. `dp_size == 1` is "full tensors on one rank".

Target layout (`TargetLayout(num_replicas, tp_size)`): target rank `t = replica * tp_size + tp_rank`.
Each parameter gets a `Split` (see `vllm_tp_split`, the way vLLM shards Qwen2/Llama):
  column-parallel (q/k/v, gate/up, and their biases)  dim 0, chunk n / tp (must divide)
  row-parallel (o_proj, down_proj weights)            dim 1, chunk n / tp (must divide)
  vocab-parallel (embed_tokens, lm_head)              dim 0, chunk round_up(n, 64) / tp: tp rank r
                                                      holds rows [r*c, min((r+1)*c, n)); vLLM pads
                                                      the local tensor to c rows, the padding is not
                                                      transferred
  replicated (norms, everything else)                 the full tensor on every tp rank
With `tp_size == 1` every target rank holds every parameter in full.

A `Transfer` is the intersection box (in global coordinates) of what a source rank holds and what
a target rank needs; `src_index` / `dst_index` turn it into slices of the two local tensors.
"""

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

Box = Tuple[Tuple[int, int], ...]  # [lo, hi) per dim, global coordinates
VOCAB_PAD = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE
ALIGN = 64  # byte alignment of tensors inside packed buffers and target arenas


def chunk_range(n: int, chunk: int, rank: int) -> Tuple[int, int]:
    """Rows `[lo, hi)` of rank `rank` when `n` rows are cut into pieces of `chunk` (torch.chunk)."""
    return min(rank * chunk, n), min((rank + 1) * chunk, n)


def align(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Split:
    """How one parameter is cut over tp ranks: `dim` (None: replicated) in pieces of `chunk`."""

    dim: Optional[int] = None
    chunk: int = 0
    kind: str = "replicated"


@dataclass(frozen=True)
class SourceLayout:
    """FSDP2 Shard(0) over `dp_size` ranks (torch.chunk semantics); 1 = full tensors on one rank."""

    dp_size: int

    def __post_init__(self):
        if self.dp_size < 1:
            raise ValueError(f"dp_size must be >= 1, got {self.dp_size}")

    def box(self, shape: Sequence[int], rank: int) -> Box:
        if not shape:  # 0-dim tensors are not sharded by FSDP2: rank 0 provides them
            return () if rank == 0 else None
        lo, hi = chunk_range(shape[0], math.ceil(shape[0] / self.dp_size), rank)
        return ((lo, hi),) + tuple((0, d) for d in shape[1:])


@dataclass(frozen=True)
class TargetLayout:
    """`num_replicas` generation replicas, each over `tp_size` tensor-parallel ranks."""

    num_replicas: int = 1
    tp_size: int = 1

    def __post_init__(self):
        if self.num_replicas < 1 or self.tp_size < 1:
            raise ValueError(f"num_replicas and tp_size must be >= 1, got {self.num_replicas}, {self.tp_size}")

    @property
    def world_size(self) -> int:
        return self.num_replicas * self.tp_size

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp_size

    def box(self, shape: Sequence[int], split: Split, rank: int) -> Box:
        full = tuple((0, d) for d in shape)
        if split.dim is None or self.tp_size == 1:
            return full
        lo, hi = chunk_range(shape[split.dim], split.chunk, self.tp_rank(rank))
        return full[:split.dim] + ((lo, hi),) + full[split.dim + 1:]


_COLUMN = re.compile(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj|qkv_proj|gate_up_proj)\.(weight|bias)$")
_ROW = re.compile(r"\.(o_proj|down_proj)\.weight$")
_VOCAB = re.compile(r"(^|\.)(embed_tokens|lm_head)\.weight$")


def vllm_tp_split(name: str, shape: Sequence[int], tp_size: int) -> Split:
    """The tensor-parallel split vLLM uses for a Qwen2/Llama parameter called `name` (HF naming)."""
    if tp_size == 1 or not shape:
        return Split()
    if _VOCAB.search(name):
        padded = (shape[0] + VOCAB_PAD - 1) // VOCAB_PAD * VOCAB_PAD
        return Split(0, math.ceil(padded / tp_size), "vocab")
    for pattern, dim, kind in ((_COLUMN, 0, "column"), (_ROW, 1, "row")):
        if pattern.search(name):
            if len(shape) <= dim or shape[dim] % tp_size:
                raise ValueError(f"{name}: dim {dim} of shape {tuple(shape)} is not divisible by tp_size {tp_size}")
            return Split(dim, shape[dim] // tp_size, kind)
    return Split()


def check_heads(num_heads: int, num_kv_heads: int, tp_size: int) -> None:
    """Column splits cut whole heads only when tp divides the head counts (vLLM replicates kv heads
    when tp > num_kv_heads; that layout is not planned here)."""
    if num_heads % tp_size or num_kv_heads % tp_size:
        raise ValueError(f"tp_size {tp_size} must divide num_heads {num_heads} and num_kv_heads {num_kv_heads}")


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: Tuple[int, ...]
    dtype: torch.dtype
    split: Split

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class Transfer:
    """`box` (global coordinates) of parameter `name` moves from source rank `src` to target rank `dst`;
    the source's local tensor starts at global `src_origin`, the target's at `dst_origin`."""

    name: str
    src: int
    dst: int
    box: Box
    src_origin: Tuple[int, ...]
    dst_origin: Tuple[int, ...]
    itemsize: int

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.box)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    def src_index(self) -> Tuple[slice, ...]:
        return tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(self.box, self.src_origin))

    def dst_index(self) -> Tuple[slice, ...]:
        return tuple(slice(lo - o, hi - o) for (lo, hi), o in zip(self.box, self.dst_origin))

    def split_rows(self, max_bytes: int) -> List["Transfer"]:
        """Cut along the box's dim 0 into pieces of at most `max_bytes` (at least one row each)."""
        if self.nbytes <= max_bytes or not self.box:
            return [self]
        (lo, hi), rest = self.box[0], self.box[1:]
        row = self.nbytes // (hi - lo)
        step = max(1, max_bytes // row)
        return [Transfer(self.name, self.src, self.dst, ((a, min(a + step, hi)),) + rest, self.src_origin,
                         self.dst_origin, self.itemsize) for a in range(lo, hi, step)]


def _intersect(a: Box, b: Box) -> Optional[Box]:
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b))
    return out if all(lo < hi for lo, hi in out) else None


@dataclass
class ReshardPlan:
    """Transfers for every (source rank, target rank, parameter), in parameter order."""

    params: Dict[str, ParamInfo]
    source: SourceLayout
    target: TargetLayout
    transfers: List[Transfer] = field(default_factory=list)

    def src_box(self, name: str, rank: int) -> Box:
        return self.source.box(self.params[name].shape, rank)

    def dst_box(self, name: str, rank: int) -> Box:
        p = self.params[name]
        return self.target.box(p.shape, p.split, rank)

    def src_shape(self, name: str, rank: int) -> Tuple[int, ...]:
        box = self.src_box(name, rank)
        return tuple(hi - lo for lo, hi in box) if box is not None else None

    def dst_shape(self, name: str, rank: int) -> Tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.dst_box(name, rank))

    def pair(self, src: int, dst: int) -> List[Transfer]:
        return [t for t in self.transfers if t.src == src and t.dst == dst]

    def targets_of(self, src: int) -> List[int]:
        return sorted({t.dst for t in self.transfers if t.src == src})

    def sources_of(self, dst: int) -> List[int]:
        return sorted({t.src for t in self.transfers if t.dst == dst})

    def contiguous(self, t: Transfer) -> bool:
        """Whether `t` is one contiguous block in both local tensors (it spans all of dims 1.. on both)."""
        return t.box[1:] == self.src_box(t.name, t.src)[1:] == self.dst_box(t.name, t.dst)[1:]

    def buckets(self, src: int, dst: int, bucket_bytes: int, solo_bytes: Optional[int] = None) -> List[List[Transfer]]:
        """The pair's transfers as messages, in plan order, both sides computing the same list.

        A transfer contiguous on both sides and of at least `solo_bytes` (default: min(64 KiB,
        bucket_bytes)) travels alone, sent from and received into the tensors themselves (no
        staging copy: on loopback gloo the two extra memcpys cost more than the extra messages). The others are packed greedily into buckets of <= `bucket_bytes` (pieces
        64-byte aligned). Anything larger than a bucket is cut into row ranges of <= `bucket_bytes`
        that each make a message of their own, so large tensors pipeline too."""
        solo_bytes = min(2**16, bucket_bytes) if solo_bytes is None else solo_bytes
        out: List[List[Transfer]] = []
        current, size = [], 0
        for transfer in self.pair(src, dst):
            solo = transfer.nbytes >= solo_bytes and self.contiguous(transfer)
            for piece in transfer.split_rows(bucket_bytes):
                if solo:
                    out.append([piece])
                    continue
                if current and size + align(piece.nbytes) > bucket_bytes:
                    out.append(current)
                    current, size = [], 0
                current.append(piece)
                size += align(piece.nbytes)
        if current:
            out.append(current)
        return out

    def arena_layout(self, dst: int) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
        """Byte offset and local shape of every parameter in target rank `dst`'s contiguous arena."""
        layout, offset = {}, 0
        for name, p in self.params.items():
            shape = self.dst_shape(name, dst)
            layout[name] = (offset, shape)
            offset += align(math.prod(shape) * p.itemsize)
        return layout

    def arena_bytes(self, dst: int) -> int:
        return sum(align(math.prod(self.dst_shape(n, dst)) * p.itemsize) for n, p in self.params.items())

    def fingerprint(self) -> int:
        """A 62-bit digest of the plan; both sides check it so that mismatched plans fail loudly."""
        text = repr((self.source, self.target, [(p.name, p.shape, str(p.dtype), p.split) for p in self.params.values()]))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 2


def make_plan(params: Iterable[Tuple[str, Sequence[int], torch.dtype]], source: SourceLayout,
              target: TargetLayout, split_fn=vllm_tp_split) -> ReshardPlan:
    """Plan the move of `params` (name, full shape, dtype) from `source` to `target`.

    `split_fn(name, shape, tp_size) -> Split` chooses each parameter's tensor-parallel cut
    (default: vLLM's Qwen2/Llama sharding). Every element of every target rank's slice comes from
    exactly one source rank (FSDP2 shards are disjoint), so the plan has no choices to make.
    """
    infos = {}
    for name, shape, dtype in params:
        shape = tuple(int(d) for d in shape)
        infos[name] = ParamInfo(name, shape, dtype, split_fn(name, shape, target.tp_size))
    plan = ReshardPlan(infos, source, target)
    for name, p in infos.items():
        for dst in range(target.world_size):
            dbox = plan.dst_box(name, dst)
            if not all(lo < hi for lo, hi in dbox) and dbox:
                continue  # this tp rank holds no rows of a short vocab
            for src in range(source.dp_size):
                sbox = plan.src_box(name, src)
                if sbox is None:
                    continue
                box = _intersect(sbox, dbox) if dbox else ()
                if box is None:
                    continue
                plan.transfers.append(Transfer(name, src, dst, box, tuple(lo for lo, _ in sbox),
                                               tuple(lo for lo, _ in dbox), p.itemsize))
    return plan


def plan_for_module(module: torch.nn.Module, source: SourceLayout, target: TargetLayout) -> ReshardPlan:
    """Plan for a module's parameters (names as in `named_parameters`, so tied weights appear once).

    Works on full modules and on FSDP2-wrapped ones (DTensor parameters report their full shape)."""
    return make_plan(((n, p.shape, p.dtype) for n, p in module.named_parameters()), source, target)
