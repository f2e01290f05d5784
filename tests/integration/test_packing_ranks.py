"""Packing over two FSDP2 ranks (gloo): token-balanced shards whose packed micro-batch counts differ are
evened out by the group (an all-reduce), and the update's losses and gradient norm equal one padded
process over the whole batch (the loss divisor is the group's whole-batch count)."""

import pytest
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig
from rlinf.scheduler import WorkerGroup
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.packing import pack_bins, row_lengths
from rlinf.workflows.batching import build_lm_batch, shard_rows

pytestmark = pytest.mark.timeout(180)

VOCAB, PAD, T, BUDGET = 16, 0, 6, 14
MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)
# 8 ragged rows (lengths 12 8 8 5 3 6 4 7): the balanced shards pack into 3 and 2 bins at BUDGET
PROMPTS = [[3] * 9, [4] * 8, [5, 6], [7], [8, 9], [10], [11, 12], [13]]
RESPONSE_LENGTHS = [3, 0, 6, 4, 1, 5, 2, 6]


def _batch():
    gen = torch.Generator().manual_seed(0)
    n = len(PROMPTS)
    mask = (torch.arange(T)[None] < torch.tensor(RESPONSE_LENGTHS)[:, None]).float()
    responses = torch.where(mask > 0, torch.randint(3, VOCAB, (n, T), generator=gen), PAD)
    batch = build_lm_batch(PROMPTS, {"responses": responses, "logprobs": torch.zeros(n, T), "mask": mask}, PAD)
    batch["behaviour_logprobs"] = -torch.rand(n, T, generator=gen) * mask - 2.0
    batch["advantages"] = torch.randn(n, T, generator=gen) * mask
    return batch


def test_packed_update_on_two_ranks_equals_one_padded_process(cluster):
    algo = AlgorithmConfig(entropy_coef=0.01)
    batch = _batch()
    shards = shard_rows(batch, 2, balance_tokens=True)
    bins = [len(pack_bins(row_lengths(s), BUDGET)) for s in shards]
    assert bins[0] != bins[1]  # the group must agree on a count (FSDP2 gathers once per forward)

    local = ActorWorker(ActorConfig(model=MODEL, lr=0.0, micro_batch_size=3), algo, VOCAB, 3)
    local.setup()
    expected = local.update(dict(batch))

    cfg = ActorConfig(model=MODEL, lr=0.0, micro_batch_size=3, max_tokens_per_micro_batch=BUDGET)
    group = WorkerGroup(cluster, ActorWorker, "packing_actor", [0, 1], args=(cfg, algo, VOCAB, 3))
    try:
        group.call("setup").wait()
        got = group.scatter("update", shards).wait()
    finally:
        group.shutdown()
    assert got[0] == got[1]
    for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm"):
        assert got[0][key] == pytest.approx(expected[key], abs=1e-5), key


def _two_rank_update(cluster, name, cfg, algo, shards):
    """Two updates of a fresh 2-rank actor on `shards`; returns (metrics of each update, full weights after)."""
    group = WorkerGroup(cluster, ActorWorker, name, [0, 1], args=(cfg, algo, VOCAB, 3))
    try:
        group.call("setup").wait()
        metrics = [group.scatter("update", shards).wait()[0] for _ in range(2)]
        weights = group.call("full_state_dict").wait()[0]
    finally:
        group.shutdown()
    return metrics, weights


def test_gathering_once_per_pass_gives_the_same_update(cluster):
    """actor.fsdp_gather_once (one all-gather and one gradient reduce-scatter per pass instead of per packed
    micro-batch) changes only the order in which gradients are added: the same losses and gradient norms to
    float rounding, and weights after two AdamW steps within 1% of one step's size."""
    algo = AlgorithmConfig(entropy_coef=0.01)
    shards = shard_rows(_batch(), 2, balance_tokens=True)
    base = ActorConfig(model=MODEL, lr=1e-2, micro_batch_size=3, max_tokens_per_micro_batch=BUDGET)
    assert min(len(pack_bins(row_lengths(s), BUDGET)) for s in shards) > 1  # several micro-batches per pass
    expected, expected_weights = _two_rank_update(cluster, "per_micro_batch", base, algo, shards)
    once = ActorConfig(model=MODEL, lr=1e-2, micro_batch_size=3, max_tokens_per_micro_batch=BUDGET,
                       fsdp_gather_once=True)
    got, got_weights = _two_rank_update(cluster, "gather_once", once, algo, shards)
    for step in range(2):
        for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert expected[1]["actor/pg_loss"] != expected[0]["actor/pg_loss"]  # the first step moved the weights
    assert got_weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        # Adam divides by the gradient's own scale, so a rounding difference in a near-zero gradient entry can
        # move that weight by up to lr; a lost or doubled micro-batch gradient would move many by ~lr (1e-2).
        torch.testing.assert_close(got_weights[name], tensor, rtol=0.0, atol=1e-4, msg=name)
