"""Policy losses, value loss, entropy, log-probs and loss aggregation.

Shapes: B sequences of T steps (tokens, actions or action chunks); `mask` [B, T] is 1 on valid
steps. Per-token losses are reduced to a scalar by `aggregate_loss` (config `algorithm.loss_agg`).

Policy losses live in the registry `POLICY_LOSSES` (config `algorithm.policy_loss`) and share one
signature:

    fn(logprobs, old_logprobs, advantages, mask, clip_low=0.2, clip_high=0.2, dual_clip=None,
       loss_agg="token-mean", is_weights=None, denominator=None) -> (loss, metrics)

`metrics` maps clipfrac, approx_kl, ratio_mean, dual_clip_frac to detached 0-dim tensors (call
.item() when logging). `is_weights` [B, T] (detached inside) multiplies the per-token loss: the
truncated importance weights behaviour -> proximal policy of decoupled PPO, where `old_logprobs`
are the proximal policy's. `denominator` overrides the aggregation's divisor so that gradient
accumulation over micro-batches can normalise by the whole batch (see `aggregate_loss`).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .advantages import masked_mean
from .registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss", key="algorithm.policy_loss")
PAIRWISE_LOSSES: Registry = Registry("pairwise (preference) loss")
LOSS_AGG: Registry = Registry("loss aggregation", key="algorithm.loss_agg")

Metrics = Dict[str, Tensor]


# ----------------------------------------------------------------------------- aggregation
@LOSS_AGG.register("token-mean")
def _token_mean(l: Tensor, m: Tensor, denominator: Optional[float]) -> Tensor:
    den = m.sum().clamp_min(1e-8) if denominator is None else denominator
    return (l * m).sum() / den


@LOSS_AGG.register("seq-mean-token-mean")
def _seq_mean_token_mean(l: Tensor, m: Tensor, denominator: Optional[float]) -> Tensor:
    n_tok = m.sum(dim=1)
    has = (n_tok > 0).to(l.dtype)
    per_seq = (l * m).sum(dim=1) / n_tok.clamp_min(1e-8)
    den = has.sum().clamp_min(1) if denominator is None else denominator
    return (per_seq * has).sum() / den


@LOSS_AGG.register("seq-mean-token-sum")
def _seq_mean_token_sum(l: Tensor, m: Tensor, denominator: Optional[float]) -> Tensor:
    has = (m.sum(dim=1) > 0).to(l.dtype)
    den = has.sum().clamp_min(1) if denominator is None else denominator
    return (l * m).sum() / den


def aggregate_loss(per_token: Tensor, mask: Tensor, mode: str = "token-mean", denominator: Optional[float] = None) -> Tensor:
    """Reduce a [B, T] per-token loss l with mask m to a scalar.

    token-mean:          sum_bt l m / sum_bt m
    seq-mean-token-mean: mean over sequences b with sum_t m > 0 of (sum_t l m / sum_t m)
    seq-mean-token-sum:  mean over sequences b with sum_t m > 0 of sum_t l m
    Sequences with no valid step are padding and are excluded from the sequence count. A given
    `denominator` replaces the divisor (total valid tokens, or valid sequences, of the whole batch
    when the batch is split into micro-batches). Unknown mode -> ConfigError (algorithm.loss_agg).
    """
    return LOSS_AGG.get(mode)(per_token, mask.to(per_token.dtype), denominator)


# ----------------------------------------------------------------------------- policy losses
def _common(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """log ratio (clamped to [-20, 20] before exp) and the float mask."""
    m = mask.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    return log_ratio, m


def _clipped_pg(ratio: Tensor, adv: Tensor, m: Tensor, clip_low: float, clip_high: float, dual_clip: Optional[float]) -> Tuple[Tensor, Metrics]:
    """Per-token PPO objective on a given ratio r (see `ppo`)."""
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(pg1, pg2)
    metrics = {"clipfrac": masked_mean((pg2 > pg1).to(m.dtype), m).detach()}
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        pg3 = -adv * dual_clip
        dual = (adv < 0) & (loss > pg3)
        loss = torch.where(adv < 0, torch.minimum(loss, pg3), loss)
        metrics["dual_clip_frac"] = masked_mean(dual.to(m.dtype), m).detach()
    else:
        metrics["dual_clip_frac"] = torch.zeros((), dtype=m.dtype, device=m.device)
    return loss, metrics


def _finish(loss_tok: Tensor, m: Tensor, is_weights: Optional[Tensor], loss_agg: str, denominator: Optional[float]) -> Tensor:
    if is_weights is not None:
        loss_tok = loss_tok * is_weights.detach().to(loss_tok.dtype)
    return aggregate_loss(loss_tok, m, loss_agg, denominator)


@POLICY_LOSSES.register("ppo")
def ppo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: Optional[float] = None,
    loss_agg: str = "token-mean",
    is_weights: Optional[Tensor] = None,
    denominator: Optional[float] = None,
) -> Tuple[Tensor, Metrics]:
    """PPO clipped surrogate (clip-higher when clip_high > clip_low, optional dual clip).

    r = exp(logp - old_logp);  l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    dual clip (c > 1), for A < 0 only: l = min(l, -A c)
    l *= is_weights (detached, optional); loss = aggregate_loss(l, mask, loss_agg).
    Metrics: clipfrac = mean[-A clip(r) > -A r], approx_kl = mean(old_logp - logp),
    ratio_mean = mean(r), dual_clip_frac = mean[A < 0 and l > -A c] (all over valid tokens).
    """
    log_ratio, m = _common(logprobs, old_logprobs, mask)
    ratio = torch.exp(log_ratio)
    loss_tok, metrics = _clipped_pg(ratio, advantages, m, clip_low, clip_high, dual_clip)
    metrics["approx_kl"] = masked_mean(-log_ratio, m).detach()
    metrics["ratio_mean"] = masked_mean(ratio, m).detach()
    return _finish(loss_tok, m, is_weights, loss_agg, denominator), metrics


@POLICY_LOSSES.register("gspo")
def gspo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip: Optional[float] = None,
    loss_agg: str = "seq-mean-token-mean",
    is_weights: Optional[Tensor] = None,
    denominator: Optional[float] = None,
) -> Tuple[Tensor, Metrics]:
    """GSPO: PPO clipping on the sequence-level ratio s_b = exp(mean_t (logp - old_logp)) (valid t).

    Per token s_bt = sg(s_b) * exp(logp_t - sg(logp_t)) (value s_b, gradient s_b * d logp_t), then
    l = max(-A s_bt, -A clip(s_bt, 1 - clip_low, 1 + clip_high)) as in `ppo`. GSPO's clip ranges
    are tiny (3e-4 / 4e-4) because the ratio is a geometric mean; the paper uses seq-mean-token-mean.
    """
    log_ratio, m = _common(logprobs, old_logprobs, mask)
    seq_log_ratio = masked_mean(log_ratio, m, dim=1)[:, None]
    tok_log_ratio = (seq_log_ratio.detach() + logprobs - logprobs.detach()).clamp(max=20.0)
    ratio = torch.exp(tok_log_ratio)
    loss_tok, metrics = _clipped_pg(ratio, advantages, m, clip_low, clip_high, dual_clip)
    metrics["approx_kl"] = masked_mean(-log_ratio, m).detach()
    metrics["ratio_mean"] = masked_mean(ratio, m).detach()
    return _finish(loss_tok, m, is_weights, loss_agg, denominator), metrics


@POLICY_LOSSES.register("reinforce")
def reinforce(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: Optional[float] = None,
    loss_agg: str = "token-mean",
    is_weights: Optional[Tensor] = None,
    denominator: Optional[float] = None,
) -> Tuple[Tensor, Metrics]:
    """Vanilla policy gradient: l = -A * logp (times is_weights), no ratio and no clipping (the clip
    arguments are accepted for the uniform signature and ignored). old_logprobs feed only metrics."""
    log_ratio, m = _common(logprobs, old_logprobs, mask)
    metrics = {
        "clipfrac": torch.zeros((), dtype=m.dtype, device=m.device),
        "dual_clip_frac": torch.zeros((), dtype=m.dtype, device=m.device),
        "approx_kl": masked_mean(-log_ratio, m).detach(),
        "ratio_mean": masked_mean(torch.exp(log_ratio), m).detach(),
    }
    return _finish(-advantages * logprobs, m, is_weights, loss_agg, denominator), metrics


def compute_policy_loss(name: str, *args, **kwargs) -> Tuple[Tensor, Metrics]:
    """Dispatch to POLICY_LOSSES.get(name) (ConfigError naming algorithm.policy_loss if unknown)."""
    return POLICY_LOSSES.get(name)(*args, **kwargs)


# ----------------------------------------------------------------------------- value loss
def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: Optional[float] = 0.2,
    loss_agg: str = "token-mean",
    denominator: Optional[float] = None,
) -> Tuple[Tensor, Metrics]:
    """Clipped value loss: V_c = old + clamp(V - old, -c, c),
    l = 0.5 * max((V - R)^2, (V_c - R)^2); loss = aggregate_loss(l, mask, loss_agg).
    clip None or <= 0 disables clipping: l = 0.5 (V - R)^2.
    Metrics: vf_clipfrac = mean[(V_c - R)^2 > (V - R)^2] over valid steps, vpred_mean."""
    m = mask.to(values.dtype)
    err = (values - returns) ** 2
    if clip is not None and clip > 0:
        v_c = old_values + (values - old_values).clamp(-clip, clip)
        err_c = (v_c - returns) ** 2
        loss_tok = 0.5 * torch.maximum(err, err_c)
        clipfrac = masked_mean((err_c > err).to(m.dtype), m).detach()
    else:
        loss_tok = 0.5 * err
        clipfrac = torch.zeros((), dtype=m.dtype, device=m.device)
    metrics = {"vf_clipfrac": clipfrac, "vpred_mean": masked_mean(values, m).detach()}
    return aggregate_loss(loss_tok, m, loss_agg, denominator), metrics


# ----------------------------------------------------------------------------- preference loss
@PAIRWISE_LOSSES.register("bradley_terry")
def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: Optional[Tensor] = None) -> Tensor:
    """Bradley-Terry reward-model loss over N pairs ([N] scalar rewards each):
    loss = mean_i -log sigmoid(r_chosen_i - r_rejected_i - m_i), m = margin (0 when None), computed
    with logsigmoid (stable for large |differences|). P(chosen > rejected) = sigmoid(r_c - r_r)."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin.to(diff.dtype)
    return -F.logsigmoid(diff).mean()


# ----------------------------------------------------------------------------- logits helpers
def _upcast(logits: Tensor) -> Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def entropy_from_logits(logits: Tensor) -> Tensor:
    """[..., V] -> [...]: H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, p = softmax(z)
    (computed on z - max(z); -inf logits, e.g. outside a top-k / top-p support, contribute 0 to the
    value and to the gradient; half precision is computed in float32)."""
    z = _upcast(logits)
    z = z - z.max(dim=-1, keepdim=True).values.detach()  # H is shift-invariant; avoids cancellation
    p = torch.softmax(z, dim=-1)
    # p_v z_v with z_v = -inf is 0 (p_v = 0); a finite stand-in keeps the gradient free of 0 * inf.
    pz = p * torch.where(torch.isfinite(z), z, torch.zeros((), dtype=z.dtype, device=z.device))
    return torch.logsumexp(z, dim=-1) - pz.sum(dim=-1)


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """[B, T, V], [B, T] -> [B, T]: log softmax(z)[token] = z[token] - logsumexp(z), without
    materialising the full log_softmax. Half-precision logits are upcast one sequence at a time
    (float32 accuracy, bounded extra memory)."""
    idx = tokens.long().unsqueeze(-1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        rows = [F.log_softmax(row.float(), dim=-1).gather(-1, i).squeeze(-1) for row, i in zip(logits, idx)]
        return torch.stack(rows)
    return logits.gather(-1, idx).squeeze(-1) - torch.logsumexp(logits, dim=-1)
