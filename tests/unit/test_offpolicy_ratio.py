"""The PPO ratio's denominator (behaviour vs proximal log-probs) and the sampling distribution the actor
scores (temperature / top-k / top-p), on hand-computed tiny cases with the actor run in-process."""

import math

import pytest
import torch

from rlinf.algorithms import entropy_from_logits, logprobs_from_logits
from rlinf.config import ActorConfig, AlgorithmConfig, ModelConfig
from rlinf.workflows.batching import build_lm_batch
from rlinf.workers.actor.fsdp_actor import ActorWorker
from rlinf.workers.rollout.sampling import SamplingParams, sample, sampling_logits, sampling_logprobs, sampling_support
from tests.vllm_helpers import peaked_causal_lm

VOCAB, EOS, PAD = 16, 2, 0
MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2)

# Per-token ratios pi_theta / pi_behaviour of a stale batch, and advantages (clip 0.2):
#   A = +1: r 1.5 -> clipped to 1.2 (counts in clipfrac), r 0.5 -> 0.5, r 1.1 -> 1.1
#   A = -1: r 0.9 -> 0.9, r 1.3 -> 1.3 (-A r is the max), r 0.6 -> clipped to 0.8 (counts)
RATIOS = [[1.5, 0.5, 1.1], [0.9, 1.3, 0.6]]
ADVS = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]


def _actor(correction: str = "none", epochs: int = 1, sampling=1.0, lr: float = 0.0, seed: int = 0) -> ActorWorker:
    algo = AlgorithmConfig(off_policy_correction=correction, max_staleness=1, update_epochs=epochs, tis_cap=1.4)
    actor = ActorWorker(ActorConfig(model=MODEL, lr=lr, micro_batch_size=64, grad_clip=0.0), algo, VOCAB, seed,
                        sampling)
    actor.setup()
    return actor


def _stale_batch(actor: ActorWorker):
    """Two prompts + 3 response tokens each; behaviour log-probs = current - log(RATIOS)."""
    gen = torch.Generator().manual_seed(1)
    prompts = [[3, 4, 5], [6, 7, 8, 9]]
    responses = torch.randint(3, VOCAB, (2, 3), generator=gen)
    rollout = {"responses": responses, "logprobs": torch.zeros(2, 3), "mask": torch.ones(2, 3)}
    batch = build_lm_batch(prompts, rollout, PAD)
    current = actor._logprobs(actor.model, batch)
    batch["behaviour_logprobs"] = current - torch.log(torch.tensor(RATIOS))
    batch["advantages"] = torch.tensor(ADVS)
    return batch


@pytest.mark.parametrize("epochs", [1, 2])
def test_stale_batch_ratio_uses_behaviour_logprobs(epochs):
    """off_policy_correction none: r = pi_theta / pi_behaviour (not the detached current policy, which
    would give r == 1, clipfrac 0 and train a stale batch as if on-policy). lr 0: every epoch is the same."""
    actor = _actor("none", epochs)
    out = actor.update(_stale_batch(actor))
    r = [x for row in RATIOS for x in row]
    assert out["actor/ratio_mean"] == pytest.approx(sum(r) / 6, abs=1e-5)  # 0.98333
    assert out["actor/clipfrac"] == pytest.approx(2 / 6, abs=1e-6)
    assert out["actor/approx_kl"] == pytest.approx(-sum(math.log(x) for x in r) / 6, abs=1e-5)
    # per-token max(-A r, -A clip(r)): -1.2, -0.5, -1.1, 0.9, 1.3, 0.8 -> token mean 0.2 / 6
    assert out["actor/pg_loss"] == pytest.approx(0.2 / 6, abs=1e-5)


def test_tis_keeps_decoupled_ppo():
    """tis: the clip is around the proximal policy (this forward, so r == 1 with one epoch) and each token
    is weighted by w = min(pi_prox / pi_behaviour, tis_cap = 1.4): loss = mean(-A w)."""
    actor = _actor("tis", 1)
    out = actor.update(_stale_batch(actor))
    assert out["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert out["actor/clipfrac"] == 0.0
    w = [[min(x, 1.4) for x in row] for row in RATIOS]
    expected = sum(-a * x for ar, wr in zip(ADVS, w) for a, x in zip(ar, wr)) / 6  # (-3.0 + 2.8) / 6
    assert out["actor/pg_loss"] == pytest.approx(expected, abs=1e-5)
    assert out["offpolicy/is_ratio_mean"] == pytest.approx(sum(sum(row) for row in RATIOS) / 6, abs=1e-5)
    assert out["offpolicy/is_clipped_frac"] == pytest.approx(1 / 6, abs=1e-6)


def _peaked_model(seed: int):
    """A tiny random LM with larger weights than HF's init, so top-p 0.9 cuts into a top-5 set."""
    return peaked_causal_lm(MODEL, VOCAB, seed, 0.3)


def test_actor_logprobs_equal_sampler_behaviour_logprobs_with_top_p_top_k():
    """Transformers engine: the actor's recomputed log-probs are the sampler's recorded behaviour ones
    (temperature 0.8, top_p 0.9, top_k 5) within 1e-5, so the on-policy ratio at step 0 is 1."""
    params = SamplingParams(max_new_tokens=6, temperature=0.8, top_p=0.9, top_k=5)
    model = _peaked_model(3)
    prompts = [[3, 4, 5], [6, 7], [8, 9, 10, 11], [12]] * 4
    gen = sample(model, prompts, params, EOS, PAD, torch.Generator().manual_seed(0))
    batch = build_lm_batch(prompts, {"responses": gen.responses, "logprobs": gen.logprobs, "mask": gen.mask}, PAD)
    mask = batch["response_mask"] > 0

    actor = _actor("none", 1, sampling=params)
    actor.model.load_state_dict(model.state_dict())
    logp = actor._logprobs(actor.model, batch)
    assert torch.isfinite(logp).all()  # padding after EOS (outside the support) stays finite
    assert (logp - gen.logprobs)[mask].abs().max() < 1e-5

    # The filters matter here: temperature-only log-probs (what the actor used to compute) differ.
    T = batch["response_mask"].shape[1]
    with torch.no_grad():
        raw = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"]).logits[:, -T - 1:-1]
    tempered = logprobs_from_logits(raw / 0.8, batch["input_ids"][:, -T:])
    assert (tempered - gen.logprobs)[mask].abs().max() > 1e-2
    support = sampling_support(raw / 0.8, 5, 0.9).sum(-1)[mask]
    assert support.max() <= 5 and support.min() < 5  # top-k and top-p both cut somewhere

    batch["advantages"] = torch.where(mask, 1.0, 0.0)
    out = actor.update(batch)
    assert abs(out["actor/ratio_mean"] - 1.0) < 1e-5 and out["actor/clipfrac"] == 0.0
    assert abs(out["offpolicy/is_ratio_mean"] - 1.0) < 1e-5


def test_sampling_logprobs_formula_and_support():
    """log pi(y) = z_y - logsumexp_S z with z = l / tau, S = top-k n top-p (hand case), token added to S."""
    l = torch.tensor([[[4.0, 3.0, 2.0, 1.0, 0.0]]])
    params = SamplingParams(temperature=2.0, top_k=3, top_p=0.6)
    z = l / 2.0  # 2, 1.5, 1, .5, 0; top-3 probs ~ .506 .307 .186: mass before the 2nd is .506 < .6, the 3rd .81
    assert sampling_support(z, 3, 0.6).tolist() == [[[True, True, False, False, False]]]
    for y in (0, 1):
        expected = z[0, 0, y] - torch.logsumexp(z[0, 0, :2], -1)
        assert sampling_logprobs(l, torch.tensor([[y]]), params)[0, 0] == pytest.approx(float(expected), abs=1e-6)
    # a token outside S is scored as if added to S (finite): here S + {3}
    outside = sampling_logprobs(l, torch.tensor([[3]]), params)[0, 0]
    assert outside == pytest.approx(float(z[0, 0, 3] - torch.logsumexp(z[0, 0, [0, 1, 3]], -1)), abs=1e-6)
    # greedy: unmodified logits; top_p 0 keeps the top token
    assert torch.equal(sampling_logits(l, SamplingParams(temperature=0.0, top_k=1)), l)
    assert sampling_support(z, 0, 0.0).sum() == 1


def test_entropy_over_filtered_logits_has_finite_gradient():
    """The actor's entropy bonus is over the sampling distribution (-inf outside the support)."""
    x = torch.randn(2, 3, VOCAB, requires_grad=True)
    z = sampling_logits(x, SamplingParams(temperature=0.8, top_k=5, top_p=0.9))
    h = entropy_from_logits(z)
    h.sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(x.grad).all()
    keep = torch.isfinite(z)
    p = torch.softmax(z, -1)
    manual = -(p[keep] * torch.log_softmax(z, -1)[keep]).reshape(-1).sum()
    assert float(h.detach().sum()) == pytest.approx(float(manual.detach()), abs=1e-5)
