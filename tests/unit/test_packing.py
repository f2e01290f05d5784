"""Sequence packing (rlinf.workers.packing): the packed path equals the padded path (log-probs, values, one
update step), the rank partition and the micro-batch bins keep their documented bounds. Workers run
in-process on a tiny Qwen2 (one rank, no Ray)."""

import random

import pytest
import torch

from rlinf.config import ActorConfig, AlgorithmConfig, CriticConfig, ModelConfig
from rlinf.workers.actor.fsdp_actor import ActorWorker, response_logprobs
from rlinf.workers.critic.fsdp_critic import CriticWorker
from rlinf.workers.reference.worker import ReferenceWorker
from rlinf.workers.packing import balanced_partition, merge_rows, pack_bins, packed_micro_batches, unpack
from rlinf.workers.rollout.sampling import SamplingParams
from rlinf.workflows.batching import build_lm_batch, shard_rows, unshard_rows

VOCAB, PAD = 16, 0
MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)
# Ragged rows: prompt lengths and response lengths differ; rows 1 and 5 have empty responses.
PROMPTS = [[3, 4, 5], [6, 7, 8, 9, 10], [11], [3, 5, 7, 9, 11, 13, 15], [4, 6, 8, 10], [12, 13], [5, 9, 3]]
RESPONSE_LENGTHS = [6, 0, 3, 8, 1, 0, 5]
T = 8
BUDGETS = [6, 13, 1000]  # below some rows (over-budget rows alone), a few rows per bin, everything in one bin


def _batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    n = len(PROMPTS)
    mask = (torch.arange(T)[None] < torch.tensor(RESPONSE_LENGTHS)[:, None]).float()
    responses = torch.where(mask > 0, torch.randint(3, VOCAB, (n, T), generator=gen), PAD)
    batch = build_lm_batch(PROMPTS, {"responses": responses, "logprobs": torch.zeros(n, T), "mask": mask}, PAD)
    batch["advantages"] = torch.randn(n, T, generator=gen) * mask
    batch["behaviour_logprobs"] = -torch.rand(n, T, generator=gen) * mask - 2.0
    batch["ref_logprobs"] = -torch.rand(n, T, generator=gen) * mask - 2.0
    batch["values"] = torch.randn(n, T, generator=gen) * mask
    batch["returns"] = torch.randn(n, T, generator=gen) * mask
    return batch


def _actor(max_tokens=None, loss_agg="token-mean", sampling=1.0, correction="none", attn="sdpa"):
    algo = AlgorithmConfig(loss_agg=loss_agg, entropy_coef=0.01, kl_coef=0.1, kl_in="loss",
                           off_policy_correction=correction)
    cfg = ActorConfig(model=MODEL, lr=0.0, micro_batch_size=2, grad_clip=1.0, max_tokens_per_micro_batch=max_tokens)
    actor = ActorWorker(cfg, algo, VOCAB, 0, sampling)
    actor.model.config._attn_implementation = attn
    actor.setup()
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=0.5)  # updated weights = w - lr * grad
    return actor


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_packed_logprobs_equal_padded(budget, attn):
    """Log-probs of the response tokens (top-k / top-p sampling distribution) from packed micro-batches
    equal the padded path's within 1e-5; padding columns are 0 in the packed output."""
    params = SamplingParams(temperature=0.9, top_k=6, top_p=0.95)
    batch = _batch()
    actor = _actor(budget, sampling=params, attn=attn)
    packed = actor._logprobs(actor.model, batch)
    mask = batch["response_mask"] > 0
    ref = _actor(None, sampling=params, attn=attn)
    padded = ref._logprobs(ref.model, batch)
    assert packed.shape == padded.shape
    assert (packed - padded)[mask].abs().max() < 1e-5
    assert (packed[~mask] == 0).all()


def test_reference_packed_logprobs_equal_padded():
    """The reference group packs with the actor's budget: its log-probs equal its padded ones."""
    batch = _batch()
    out = []
    for max_tokens in (None, 13):
        ref = ReferenceWorker(MODEL, VOCAB, 0, 2, 1.0, max_tokens_per_micro_batch=max_tokens)
        ref.setup()
        out.append(ref.compute_logprobs(batch))
    mask = batch["response_mask"] > 0
    assert (out[0] - out[1])[mask].abs().max() < 1e-5


def test_packing_without_block_mask_would_leak():
    """The equality above can fail: the same packed micro-batch with one causal mask over the whole packed
    sequence (attention crossing rows) changes the log-probs of every row after the first."""
    actor = _actor(1000)
    batch = _batch()
    mb = packed_micro_batches(batch, 1000)[0]
    with torch.no_grad():
        good = response_logprobs(actor.model, mb, T)[0]
        out = actor.model(input_ids=mb["pack_input_ids"], use_cache=False, position_ids=mb["pack_position_ids"],
                          attention_mask=torch.ones_like(mb["pack_input_ids"]))
        src = mb["pack_src"]
        tokens = mb["pack_input_ids"][0, src + 1]
        leaky = unpack(torch.log_softmax(out.logits[0, src], -1).gather(-1, tokens[:, None])[:, 0], mb)
    assert (good - leaky).abs().max() > 1e-3


@pytest.mark.parametrize("budget", BUDGETS)
def test_packed_values_equal_padded(budget):
    """Critic values at the response positions: packed == padded within 1e-5 (random value head)."""
    batch = _batch()
    out = []
    for max_tokens in (None, budget):
        critic = CriticWorker(CriticConfig(model=MODEL, micro_batch_size=2, max_tokens_per_micro_batch=max_tokens),
                              AlgorithmConfig(), VOCAB, 0)
        with torch.no_grad():
            critic.model.value_head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
        critic.setup()
        out.append(critic.compute_values(batch))
    assert out[0].abs().max() > 1e-2  # not trivially zero
    assert (out[0] - out[1]).abs().max() < 1e-5


@pytest.mark.parametrize("loss_agg,correction", [("token-mean", "none"), ("seq-mean-token-mean", "tis"),
                                                 ("seq-mean-token-sum", "none")])
def test_one_update_step_equal_padded_and_packed(loss_agg, correction):
    """One actor step from identical weights: the same losses (policy, entropy, KL: whole-batch
    aggregates, whatever the split) and the same updated weights (SGD: equal gradients), padded in
    micro-batches of 2 rows vs packed in bins of 13 tokens."""
    batch = _batch()
    outs, params = [], []
    for max_tokens in (None, 13):
        actor = _actor(max_tokens, loss_agg, correction=correction)
        outs.append(actor.update(dict(batch)))
        params.append({k: v.detach().clone() for k, v in actor.model.named_parameters()})
    for key in ("actor/pg_loss", "actor/entropy", "actor/kl", "actor/grad_norm", "actor/clipfrac",
                "actor/ratio_mean"):
        assert outs[0][key] == pytest.approx(outs[1][key], abs=1e-5), key
    start = _actor(None).model.state_dict()
    assert any((params[0][k] - start[k]).abs().max() > 1e-4 for k in params[0])  # the step moved the weights
    for k in params[0]:
        assert (params[0][k] - params[1][k]).abs().max() < 1e-5, k


def test_update_metrics_do_not_depend_on_the_split():
    """pg_loss is the whole batch's loss: one micro-batch per row gives what one big batch gives."""
    batch = _batch()
    outs = []
    for mbs in (1, 64):
        actor = _actor(None)
        actor.cfg.micro_batch_size = mbs
        outs.append(actor.update(dict(batch)))
    for key in ("actor/pg_loss", "actor/entropy", "actor/kl", "actor/clipfrac"):
        assert outs[0][key] == pytest.approx(outs[1][key], abs=1e-5), key


# ----------------------------------------------------------------------------- partition and bins
def _block_bound(weights, parts):
    w = sorted(weights, reverse=True)
    return max(w[i] - w[i + parts - 1] for i in range(0, len(w), parts))


@pytest.mark.parametrize("weights,parts,spread", [
    ([10, 9, 8, 7, 6, 5, 4, 3], 2, 0),          # 10+7+6+3 = 9+8+5+4 = 26
    ([100, 1, 1, 1, 1, 1], 2, 99),              # the big row dominates: {100,1,1} vs {1,1,1}
    ([5, 5, 5, 5], 4, 0),
    ([512, 16, 300, 40, 40, 200, 17, 90, 64], 3, None),
])
def test_balanced_partition_hand_cases(weights, parts, spread):
    out = balanced_partition(weights, parts)
    assert sorted(i for p in out for i in p) == list(range(len(weights)))
    assert {len(p) for p in out} == {len(weights) // parts}
    sums = [sum(weights[i] for i in p) for p in out]
    assert max(sums) - min(sums) <= _block_bound(weights, parts)
    if spread is not None:
        assert max(sums) - min(sums) == spread


@pytest.mark.parametrize("seed", range(20))
def test_balanced_partition_bound_on_random_lengths(seed):
    rng = random.Random(seed)
    parts = rng.choice([2, 3, 4, 8])
    weights = [int(min(512, max(16, rng.lognormvariate(4.5, 1.0)))) for _ in range(parts * rng.randint(1, 12))]
    out = balanced_partition(weights, parts)
    assert sorted(i for p in out for i in p) == list(range(len(weights)))
    assert all(len(p) == len(weights) // parts for p in out)
    sums = [sum(weights[i] for i in p) for p in out]
    assert max(sums) - min(sums) <= _block_bound(weights, parts)
    unrefined = balanced_partition(weights, parts, refine_steps=0)
    before = [sum(weights[i] for i in p) for p in unrefined]
    assert max(sums) - min(sums) <= max(before) - min(before) <= _block_bound(weights, parts)


def test_balanced_partition_needs_equal_counts():
    with pytest.raises(ValueError):
        balanced_partition([1, 2, 3], 2)


@pytest.mark.parametrize("seed", range(20))
def test_pack_bins_respect_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 40))]
    budget = rng.choice([8, 30, 64, 200])
    min_bins = rng.randint(0, len(lengths))
    bins = pack_bins(lengths, budget, min_bins)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert len(bins) >= min_bins and all(bins)
    for b in bins:
        assert sum(lengths[i] for i in b) <= budget or len(b) == 1


def test_pack_bins_first_fit_decreasing_hand_case():
    # FFD: 9 | 7 + 3 | 6 + 4 | 5 + 2 (budget 10); the 12-token row is alone over the budget
    assert pack_bins([5, 9, 3, 12, 7, 6, 4, 2], 10) == [[3], [1], [2, 4], [5, 6], [0, 7]]
    assert len(pack_bins([5, 9, 3, 12, 7, 6, 4, 2], 10, min_bins=7)) == 7
    with pytest.raises(ValueError):
        pack_bins([1, 2], 10, min_bins=3)


def test_packed_layout_and_row_order():
    """Positions restart per row, every kept token appears once, merge_rows restores the batch order, and
    token-balanced shards come back in batch order."""
    batch = _batch()
    mbs = packed_micro_batches(batch, 13)
    lens = batch["attention_mask"].sum(1)
    for mb in mbs:
        assert mb["pack_input_ids"].shape[1] == int(lens[mb["pack_rows"]].sum())
        starts = (mb["pack_position_ids"][0] == 0).nonzero().flatten().tolist()
        assert len(starts) == len(mb["pack_rows"])
        assert mb["pack_input_ids"].shape[1] <= 13 or len(mb["pack_rows"]) == 1
    rows = merge_rows([mb["input_ids"] for mb in mbs], mbs)
    assert torch.equal(rows, batch["input_ids"])
    shards = shard_rows(batch, 7, balance_tokens=True)
    assert torch.equal(unshard_rows([s["input_ids"] for s in shards], batch, 7, True), batch["input_ids"])
    even = {k: v[:6] for k, v in batch.items()}
    sums = [int(s["attention_mask"].sum()) for s in shard_rows(even, 2, balance_tokens=True)]
    assert abs(sums[0] - sums[1]) <= _block_bound(lens[:6].tolist(), 2)
