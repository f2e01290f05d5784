"""Policy losses, value loss, aggregation, entropy and log-probs on hand-computed cases."""

import math

import pytest
import torch

from rlinf.algorithms import (
    POLICY_LOSSES,
    aggregate_loss,
    compute_policy_loss,
    entropy_from_logits,
    gspo,
    logprobs_from_logits,
    ppo,
    reinforce,
    value_loss,
)
from rlinf.errors import ConfigError


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def _tokens(ratios, advs):
    """One sequence of N tokens with old_logp = 0 and logp = log(ratio) (requires grad)."""
    logp = torch.log(torch.tensor([ratios], dtype=torch.float64)).requires_grad_()
    return logp, torch.zeros_like(logp), torch.tensor([advs], dtype=torch.float64), torch.ones_like(logp)


def test_ppo_clip_cases_and_gradients():
    # clip 0.2 / 0.2; per token l = max(-A r, -A clip(r, 0.8, 1.2)):
    #   A=+1 r=1.1: max(-1.1, -1.1) = -1.1  inside
    #   A=+1 r=1.5: max(-1.5, -1.2) = -1.2  clipped (zero gradient)
    #   A=+1 r=0.5: max(-0.5, -0.8) = -0.5  unclipped (pessimistic side)
    #   A=-1 r=0.5: max( 0.5,  0.8) =  0.8  clipped (zero gradient)
    #   A=-1 r=1.5: max( 1.5,  1.2) =  1.5  unclipped
    # token-mean = (-1.1 - 1.2 - 0.5 + 0.8 + 1.5) / 5 = -0.1
    ratios, advs = [1.1, 1.5, 0.5, 0.5, 1.5], [1.0, 1.0, 1.0, -1.0, -1.0]
    logp, old, adv, mask = _tokens(ratios, advs)
    loss, m = ppo(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert close(loss, -0.1)
    assert close(m["clipfrac"], 2 / 5)
    assert close(m["ratio_mean"], sum(ratios) / 5)
    assert close(m["approx_kl"], -sum(math.log(r) for r in ratios) / 5)
    assert close(m["dual_clip_frac"], 0.0)
    loss.backward()
    # d l / d logp = -A r on unclipped tokens, 0 on clipped ones; token-mean divides by 5.
    assert close(logp.grad, [[-1.1 / 5, 0.0, -0.5 / 5, 0.0, 1.5 / 5]])


def test_ppo_clip_higher_and_dual_clip():
    # clip_low 0.2, clip_high 0.28: A=+1 r=1.25 is inside (1.25 < 1.28) -> -1.25
    logp, old, adv, mask = _tokens([1.25], [1.0])
    assert close(ppo(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)[0], -1.25)
    # dual clip c = 3, A=-1: r=5 -> max(5, 1.2) = 5, min(5, 3) = 3 (dual-clipped, zero gradient)
    #                          r=2 -> max(2, 1.2) = 2 < 3 (unchanged); A=+1 r=5 -> -1.2 (dual clip off for A>0)
    logp, old, adv, mask = _tokens([5.0, 2.0, 5.0], [-1.0, -1.0, 1.0])
    loss, m = ppo(logp, old, adv, mask, 0.2, 0.2, dual_clip=3.0)
    assert close(loss, (3.0 + 2.0 - 1.2) / 3)
    assert close(m["dual_clip_frac"], 1 / 3)
    loss.backward()
    assert close(logp.grad, [[0.0, 2.0 / 3, 0.0]])
    with pytest.raises(ValueError):
        ppo(logp, old, adv, mask, dual_clip=0.5)


def test_ppo_is_weights_scale_and_are_detached():
    # token-mean of [-1.1 * 0.5, -1.0 * 2.0] = (-0.55 - 2.0) / 2 = -1.275
    logp, old, adv, mask = _tokens([1.1, 1.0], [1.0, 1.0])
    w = torch.tensor([[0.5, 2.0]], dtype=torch.float64, requires_grad=True)
    loss, _ = ppo(logp, old, adv, mask, is_weights=w)
    assert close(loss, -1.275)
    loss.backward()
    assert w.grad is None


def test_ppo_mask_excludes_tokens():
    logp, old, adv, _ = _tokens([1.1, 1.5], [1.0, 1.0])
    loss, m = ppo(logp, old, adv, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert close(loss, -1.1) and close(m["clipfrac"], 0.0)


def test_reinforce_and_gspo():
    # reinforce: l = -A logp; logp = [log 0.5, log 0.25], A = [1, -2] -> mean(0.693147, -2.772589)
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    adv, mask = torch.tensor([[1.0, -2.0]]), torch.ones(1, 2)
    loss, _ = reinforce(logp, torch.zeros_like(logp), adv, mask)
    assert close(loss, (math.log(2) - 2 * math.log(4)) / 2)
    # gspo: sequence ratio = exp(mean(log r)) = exp((log 1.1 + log 1.3) / 2) = sqrt(1.43) = 1.19583
    # A = 1, clip 0.2/0.2 -> inside, per token l = -1.19583 on both tokens.
    lp = torch.log(torch.tensor([[1.1, 1.3]])).requires_grad_()
    loss, m = gspo(lp, torch.zeros_like(lp), torch.ones(1, 2), mask, clip_low=0.2, clip_high=0.2)
    assert close(loss, -math.sqrt(1.43), tol=1e-5) and close(m["clipfrac"], 0.0)
    loss.backward()  # seq-mean-token-mean: d/d logp_t = -s / 2
    assert close(lp.grad, [[-math.sqrt(1.43) / 2] * 2], tol=1e-5)
    # With a tight GSPO clip the same sequence is clipped: -1.0004, zero gradient.
    lp.grad = None
    loss, m = gspo(lp, torch.zeros_like(lp), torch.ones(1, 2), mask)
    assert close(loss, -1.0004) and close(m["clipfrac"], 1.0)


def test_policy_loss_registry():
    assert {"ppo", "gspo", "reinforce"} <= set(POLICY_LOSSES.names())
    logp, old, adv, mask = _tokens([1.1], [1.0])
    assert close(compute_policy_loss("ppo", logp, old, adv, mask)[0], -1.1)
    with pytest.raises(ConfigError) as e:
        compute_policy_loss("ppp", logp, old, adv, mask)
    assert e.value.key == "algorithm.policy_loss" and "did you mean 'ppo'" in str(e.value)


def test_aggregation_modes_2x3():
    # l = [[1,2,3],[4,5,6]], mask = [[1,1,0],[1,0,0]]
    # token-mean          = (1 + 2 + 4) / 3          = 7/3
    # seq-mean-token-mean = ((1+2)/2 + 4/1) / 2      = 2.75
    # seq-mean-token-sum  = ((1+2) + 4) / 2          = 3.5
    l = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert close(aggregate_loss(l, m, "token-mean"), 7 / 3)
    assert close(aggregate_loss(l, m, "seq-mean-token-mean"), 2.75)
    assert close(aggregate_loss(l, m, "seq-mean-token-sum"), 3.5)
    # A fully masked (padding) row changes nothing.
    l3, m3 = torch.cat([l, torch.tensor([[7.0, 8.0, 9.0]])]), torch.cat([m, torch.zeros(1, 3, dtype=m.dtype)])
    for mode, want in [("token-mean", 7 / 3), ("seq-mean-token-mean", 2.75), ("seq-mean-token-sum", 3.5)]:
        assert close(aggregate_loss(l3, m3, mode), want)
    # Explicit denominator (whole-batch count under gradient accumulation): 7 / 7
    assert close(aggregate_loss(l, m, "token-mean", denominator=7.0), 1.0)
    with pytest.raises(ConfigError) as e:
        aggregate_loss(l, m, "token_mean")
    assert e.value.key == "algorithm.loss_agg" and "did you mean 'token-mean'" in str(e.value)


def test_value_loss_clip():
    # c = 0.2. token 0: V=1, old=1, R=1.5: (V-R)^2 = 0.25, V_c = 1 -> 0.25; l = 0.125, not clipped
    #          token 1: V=2, old=1, R=2:   (V-R)^2 = 0,    V_c = 1.2 -> 0.64; l = 0.32, clipped
    # token-mean = (0.125 + 0.32) / 2 = 0.2225, vf_clipfrac = 0.5
    v = torch.tensor([[1.0, 2.0]], requires_grad=True)
    old, ret, mask = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.5, 2.0]]), torch.ones(1, 2)
    loss, m = value_loss(v, old, ret, mask, clip=0.2)
    assert close(loss, 0.2225) and close(m["vf_clipfrac"], 0.5)
    loss.backward()
    assert close(v.grad, [[(1.0 - 1.5) / 2, 0.0]])  # d 0.5 (V-R)^2 / dV = V - R, / 2 tokens
    # No clipping: 0.5 * (0.25 + 0) / 2
    assert close(value_loss(v, old, ret, mask, clip=None)[0], 0.0625)


def test_entropy_from_logits():
    V = 7
    assert close(entropy_from_logits(torch.zeros(2, 3, V)), torch.full((2, 3), math.log(V)))
    assert close(entropy_from_logits(torch.full((1, V), 1e4)), [math.log(V)], tol=1e-4)  # stable
    # p = softmax([0, log 3]) = [0.25, 0.75]
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert close(entropy_from_logits(torch.tensor([0.0, math.log(3)])), h)
    assert close(entropy_from_logits(torch.tensor([0.0, math.log(3), -math.inf])), h)
    assert entropy_from_logits(torch.zeros(2, 4, dtype=torch.bfloat16)).dtype == torch.float32


def test_logprobs_from_logits():
    logits = torch.tensor([[[0.0, math.log(3)], [5.0, 5.0]]])
    lp = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    assert close(lp, [[math.log(0.75), math.log(0.5)]])
    torch.manual_seed(0)
    z, tok = torch.randn(2, 3, 11), torch.randint(0, 11, (2, 3))
    ref = torch.log_softmax(z, -1).gather(-1, tok[..., None])[..., 0]
    assert close(logprobs_from_logits(z, tok), ref)
    assert close(logprobs_from_logits(z.bfloat16(), tok), ref, tol=5e-2)
