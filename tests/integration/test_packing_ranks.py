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
