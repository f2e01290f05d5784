"""Resharding plans: hand-computed boxes, vLLM splits, buckets, and an in-process replay."""

import math

import pytest
import torch

from rlinf.reshard.plan import (
    SourceLayout,
    TargetLayout,
    check_heads,
    chunk_range,
    make_plan,
    vllm_tp_split,
)

torch.set_num_threads(1)
F32 = torch.float32


def test_chunk_range_follows_torch_chunk():
    assert [chunk_range(5, 2, r) for r in range(4)] == [(0, 2), (2, 4), (4, 5), (5, 5)]
    for n in range(1, 12):
        for world in (1, 2, 3, 4):
            chunks = torch.arange(n).chunk(world)
            c = math.ceil(n / world)
            for r in range(world):
                lo, hi = chunk_range(n, c, r)
                expect = chunks[r].tolist() if r < len(chunks) else []
                assert list(range(lo, hi)) == expect


def test_vllm_splits():
    assert vllm_tp_split("model.layers.0.self_attn.q_proj.weight", (8, 4), 2).dim == 0
    assert vllm_tp_split("model.layers.0.self_attn.k_proj.bias", (8,), 2).chunk == 4
    assert vllm_tp_split("model.layers.0.mlp.gate_proj.weight", (8, 4), 2).kind == "column"
    row = vllm_tp_split("model.layers.0.self_attn.o_proj.weight", (4, 8), 2)
    assert (row.dim, row.chunk, row.kind) == (1, 4, "row")
    assert vllm_tp_split("model.layers.0.mlp.down_proj.weight", (4, 8), 2).dim == 1
    vocab = vllm_tp_split("model.embed_tokens.weight", (37, 4), 2)  # padded to 64 -> 32 rows per rank
    assert (vocab.dim, vocab.chunk, vocab.kind) == (0, 32, "vocab")
    assert vllm_tp_split("lm_head.weight", (151936, 8), 2).chunk == 75968
    assert vllm_tp_split("model.norm.weight", (4,), 2).dim is None
    assert vllm_tp_split("model.layers.0.self_attn.q_proj.weight", (8, 4), 1).dim is None
    with pytest.raises(ValueError, match="not divisible"):
        vllm_tp_split("model.layers.0.self_attn.k_proj.weight", (6, 4), 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        check_heads(14, 2, 4)


def test_dp2_to_two_replicas_hand_computed():
    plan = make_plan([("w", (5, 3), F32)], SourceLayout(2), TargetLayout(2, 1))
    # chunk ceil(5/2) = 3: source 0 rows [0, 3), source 1 rows [3, 5); each replica needs all rows
    got = [(t.src, t.dst, t.box, t.src_index(), t.dst_index()) for t in plan.transfers]
    assert got == [
        (0, 0, ((0, 3), (0, 3)), (slice(0, 3), slice(0, 3)), (slice(0, 3), slice(0, 3))),
        (1, 0, ((3, 5), (0, 3)), (slice(0, 2), slice(0, 3)), (slice(3, 5), slice(0, 3))),
        (0, 1, ((0, 3), (0, 3)), (slice(0, 3), slice(0, 3)), (slice(0, 3), slice(0, 3))),
        (1, 1, ((3, 5), (0, 3)), (slice(0, 2), slice(0, 3)), (slice(3, 5), slice(0, 3))),
    ]
    assert plan.sources_of(0) == [0, 1] and plan.targets_of(1) == [0, 1]
    assert plan.src_shape("w", 1) == (2, 3) and plan.dst_shape("w", 1) == (5, 3)


def test_row_parallel_from_dp2_hand_computed():
    name = "layers.0.self_attn.o_proj.weight"
    plan = make_plan([(name, (4, 4), F32)], SourceLayout(2), TargetLayout(1, 2))
    # sources hold rows [0,2) and [2,4); tp rank 0 needs columns [0,2), tp rank 1 columns [2,4)
    got = {(t.src, t.dst): (t.src_index(), t.dst_index()) for t in plan.transfers}
    assert got == {
        (0, 0): ((slice(0, 2), slice(0, 2)), (slice(0, 2), slice(0, 2))),
        (1, 0): ((slice(0, 2), slice(0, 2)), (slice(2, 4), slice(0, 2))),
        (0, 1): ((slice(0, 2), slice(2, 4)), (slice(0, 2), slice(0, 2))),
        (1, 1): ((slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2))),
    }
    assert plan.dst_shape(name, 1) == (4, 2)
    assert not any(plan.contiguous(t) for t in plan.transfers)  # column slices of source rows
    col = make_plan([("model.layers.0.mlp.up_proj.weight", (4, 4), F32)], SourceLayout(2), TargetLayout(1, 2))
    assert all(col.contiguous(t) for t in col.transfers)  # row ranges on both sides


def test_vocab_split_from_dp4_hand_computed():
    name = "model.embed_tokens.weight"
    plan = make_plan([(name, (37, 2), F32)], SourceLayout(4), TargetLayout(1, 2))
    # dp4: chunk 10 -> [0,10) [10,20) [20,30) [30,37); tp2: chunk 32 -> [0,32) and [32,37)
    to1 = [(t.src, t.box, t.src_index()[0], t.dst_index()[0]) for t in plan.transfers if t.dst == 1]
    assert to1 == [(3, ((32, 37), (0, 2)), slice(2, 7), slice(0, 5))]
    to0 = [(t.src, t.box[0]) for t in plan.transfers if t.dst == 0]
    assert to0 == [(0, (0, 10)), (1, (10, 20)), (2, (20, 30)), (3, (30, 32))]


def test_empty_source_shards_and_empty_tp_ranks_are_skipped():
    plan = make_plan([("b", (3,), F32), ("model.embed_tokens.weight", (5, 2), F32)], SourceLayout(4),
                     TargetLayout(1, 4))
    assert plan.src_shape("b", 3) == (0,)  # chunk 1: rank 3 holds nothing
    assert all(t.src != 3 for t in plan.transfers if t.name == "b")
    # vocab 5 padded to 64 -> 16 rows per tp rank: ranks 1..3 hold no rows
    assert {t.dst for t in plan.transfers if t.name == "model.embed_tokens.weight"} == {0}
    assert plan.dst_shape("model.embed_tokens.weight", 2) == (0, 2)


def test_buckets_pack_in_order_and_split_large_transfers():
    params = [("a", (4, 4), F32), ("b", (2,), F32), ("c", (64, 4), F32)]  # 64 B, 8 B, 1024 B
    plan = make_plan(params, SourceLayout(1), TargetLayout(1, 1))
    def names(buckets):
        return [[(t.name, t.box[0]) for t in b] for b in buckets]

    c_pieces = [[("c", (0, 16))], [("c", (16, 32))], [("c", (32, 48))], [("c", (48, 64))]]
    # no solo messages: a and b share a bucket (64-byte aligned: 64 + 8 <= 256); c (16 B rows) is cut
    # into 16-row pieces of one bucket each
    assert names(plan.buckets(0, 0, 256, solo_bytes=10**9)) == [[("a", (0, 4)), ("b", (0, 2))]] + c_pieces
    # default solo threshold min(64 KiB, bucket): c is contiguous on both sides and >= 256 B, so its
    # pieces go out as they come; the packed bucket of a and b is flushed at the end
    assert names(plan.buckets(0, 0, 256)) == c_pieces + [[("a", (0, 4)), ("b", (0, 2))]]
    assert plan.arena_layout(0) == {"a": (0, (4, 4)), "b": (64, (2,)), "c": (128, (64, 4))}
    assert plan.arena_bytes(0) == 128 + 1024


def _replay(plan, full):
    """Run the plan in-process: FSDP2 chunks on the source side, copies into target tensors."""
    src = {(n, s): full[n][tuple(slice(lo, hi) for lo, hi in plan.src_box(n, s))]
           for n in full for s in range(plan.source.dp_size) if plan.src_box(n, s) is not None}
    dst = {(n, d): torch.full(plan.dst_shape(n, d), float("nan")) for n in full
           for d in range(plan.target.world_size)}
    for b in (plan.buckets(s, d, 100) for s in range(plan.source.dp_size) for d in range(plan.target.world_size)):
        for bucket in b:
            for t in bucket:
                dst[t.name, t.dst][t.dst_index()] = src[t.name, t.src][t.src_index()]
    return dst


@pytest.mark.parametrize("dp", [1, 2, 3, 4])
@pytest.mark.parametrize("replicas,tp", [(2, 1), (1, 2), (2, 2), (1, 4)])
def test_replay_reproduces_every_target_slice(dp, replicas, tp):
    g = torch.Generator().manual_seed(dp * 10 + tp)
    shapes = {"model.embed_tokens.weight": (37, 8), "model.layers.0.self_attn.q_proj.weight": (8, 8),
              "model.layers.0.self_attn.q_proj.bias": (8,), "model.layers.0.self_attn.o_proj.weight": (8, 8),
              "model.layers.0.mlp.up_proj.weight": (12, 8), "model.layers.0.mlp.down_proj.weight": (8, 12),
              "model.norm.weight": (8,), "lm_head.weight": (37, 8)}
    full = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    plan = make_plan([(n, s, F32) for n, s in shapes.items()], SourceLayout(dp), TargetLayout(replicas, tp))
    dst = _replay(plan, full)
    for (name, d), t in dst.items():
        box = plan.dst_box(name, d)
        assert torch.equal(t, full[name][tuple(slice(lo, hi) for lo, hi in box)]), (name, d)
    assert plan.fingerprint() == make_plan([(n, s, F32) for n, s in shapes.items()], SourceLayout(dp),
                                           TargetLayout(replicas, tp)).fingerprint()
