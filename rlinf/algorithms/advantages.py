"""Advantage estimators and the masked statistics they use.

Shapes: a batch of B sequences (or env trajectories) of T steps; `mask` [B, T] (bool or float) is 1
on valid response tokens / env steps. Every estimator returns `(advantages [B, T], returns [B, T])`
with 0 at masked positions, and never carries gradient.

The steps are tokens for LLMs and actions or action chunks for VLA policies; nothing here depends on
which (the granularity is chosen by what the caller puts on the T axis).

Uniform call: the registry `ADV_ESTIMATORS` maps a name (`algorithm.adv_estimator`) to a function
of one `AdvantageInputs`; `compute_advantages(name, inputs)` or `compute_advantages(name, **fields)`
dispatches. Each entry checks the fields it needs. The plain functions (`gae`, `grpo`, ...) take
explicit arguments and are what the tests exercise.

Outcome-reward tasks give one score per sequence; estimators that need token rewards (GAE,
REINFORCE++) place it on the last valid token (`scores_to_token_rewards`). Estimators that need a
score per sequence but get token rewards use the masked sum of the token rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .registry import Registry

ADV_ESTIMATORS: Registry = Registry("advantage estimator", key="algorithm.adv_estimator")


# ----------------------------------------------------------------------------- masked statistics
def masked_mean(x: Tensor, mask: Tensor, dim: Optional[int] = None) -> Tensor:
    """sum(x * m) / sum(m) over `dim` (all elements if None); 0 where the mask is empty."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1e-8)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1e-8)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the valid elements: masked_mean((x - mu)^2) * n / (n - 1) if unbiased and n > 1."""
    mu = masked_mean(x, mask)
    var = masked_mean((x - mu) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        var = var * torch.where(n > 1, n / (n - 1).clamp_min(1e-8), torch.ones_like(n))
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mu) / sqrt(var + eps) with mu, var (unbiased) over the valid elements; with
    `shift_mean=False` the mean is added back (scale only). Masked positions are not zeroed."""
    mu = masked_mean(x, mask)
    out = (x - mu) * torch.rsqrt(masked_var(x, mask) + eps)
    return out if shift_mean else out + mu


def scores_to_token_rewards(scores: Tensor, mask: Tensor) -> Tensor:
    """[B] -> [B, T]: r[b, t] = scores[b] at the last t with mask[b, t] = 1, else 0 (all 0 for a
    row with no valid token)."""
    valid = mask > 0
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device).expand_as(mask)
    last = torch.where(valid, pos, torch.zeros_like(pos)).argmax(dim=1)
    out = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    out.scatter_(1, last[:, None], scores[:, None])
    return out * valid.any(dim=1, keepdim=True).to(out.dtype)


def group_stats(scores: Tensor, group_index: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample statistics of each sample's group: (mean, unbiased std, size, sum), each [B].
    Groups are the distinct values of `group_index` (any integers); std of a size-1 group is 0."""
    _, inv = torch.unique(group_index, return_inverse=True)
    G = int(inv.max()) + 1 if inv.numel() else 0
    s = scores.to(torch.promote_types(scores.dtype, torch.float32))
    cnt = torch.zeros(G, dtype=s.dtype, device=s.device).index_add_(0, inv, torch.ones_like(s))
    tot = torch.zeros(G, dtype=s.dtype, device=s.device).index_add_(0, inv, s)
    mean = tot / cnt
    sq = torch.zeros(G, dtype=s.dtype, device=s.device).index_add_(0, inv, (s - mean[inv]) ** 2)
    std = (sq / (cnt - 1).clamp_min(1)).sqrt()
    return mean[inv], std[inv], cnt[inv], tot[inv]


# ----------------------------------------------------------------------------- estimators
@torch.no_grad()
def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0, dones: Optional[Tensor] = None) -> Tensor:
    """G_t = r_t + gamma * (1 - done_t) * G_{t'} where t' is the next valid step (masked steps are
    skipped, as in multi-turn responses); G = 0 after the last valid step; 0 at masked positions."""
    valid = (mask > 0).to(rewards.dtype)
    out = torch.zeros_like(rewards)
    nxt = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = valid[:, t]
        cont = 1.0 - dones[:, t].to(rewards.dtype) if dones is not None else 1.0
        g = rewards[:, t] + gamma * cont * nxt
        out[:, t] = g * m
        nxt = m * g + (1 - m) * nxt
    return out


@torch.no_grad()
def gae(
    token_rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    dones: Optional[Tensor] = None,
    bootstrap_values: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Generalised advantage estimation.

    delta_t = r_t + gamma * (1 - done_t) * V_{t'} - V_t,   A_t = delta_t + gamma * lam * (1 - done_t) * A_{t'},
    returns_t = A_t + V_t, where t' is the next valid step. After the last valid step V = 0 and A = 0
    (or V = `bootstrap_values` [B] for truncated env rollouts). `dones` [B, T] (optional, 1 where
    the episode ends at step t) stops bootstrapping across episode boundaries (embodied rollouts
    with auto-reset). Masked steps are skipped, not treated as ends.
    """
    dt = torch.promote_types(values.dtype, torch.float32)
    r, v = token_rewards.to(dt), values.to(dt)
    valid = (mask > 0).to(dt)
    B, T = v.shape
    next_v = bootstrap_values.to(dt).clone() if bootstrap_values is not None else v.new_zeros(B)
    next_a = v.new_zeros(B)
    adv = torch.zeros_like(v)
    for t in reversed(range(T)):
        m = valid[:, t]
        cont = 1.0 - dones[:, t].to(dt) if dones is not None else 1.0
        delta = r[:, t] + gamma * cont * next_v - v[:, t]
        a = delta + gamma * lam * cont * next_a
        adv[:, t] = a * m
        next_a = m * a + (1 - m) * next_a
        next_v = m * v[:, t] + (1 - m) * next_v
    return adv, (adv + v) * valid


@torch.no_grad()
def grpo(scores: Tensor, group_index: Tensor, mask: Tensor, norm_by_std: bool = True, eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Group-relative advantage (GRPO): A_i = (r_i - mean_g) / (std_g + eps), broadcast over the
    valid tokens of sequence i. std_g is the unbiased (n - 1) std, as torch.std / verl. With
    `norm_by_std=False`: A_i = r_i - mean_g (Dr.GRPO). A size-1 group gets A = 0. returns = A."""
    mean, std, _, _ = group_stats(scores, group_index)
    s = scores.to(mean.dtype)
    a = (s - mean) / (std + eps) if norm_by_std else s - mean
    adv = a[:, None] * (mask > 0).to(a.dtype)
    return adv, adv.clone()


def drgrpo(scores: Tensor, group_index: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Dr.GRPO: A_i = r_i - mean_g (no std division), broadcast over valid tokens; returns = A."""
    return grpo(scores, group_index, mask, norm_by_std=False)


@torch.no_grad()
def rloo(scores: Tensor, group_index: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """REINFORCE leave-one-out: A_i = r_i - (sum_g - r_i) / (n_g - 1), broadcast over valid tokens;
    a size-1 group gets A = 0. returns = A."""
    _, _, n, tot = group_stats(scores, group_index)
    s = scores.to(tot.dtype)
    a = torch.where(n > 1, s - (tot - s) / (n - 1).clamp_min(1), torch.zeros_like(s))
    adv = a[:, None] * (mask > 0).to(a.dtype)
    return adv, adv.clone()


@torch.no_grad()
def reinforce_plus_plus(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0, dones: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """REINFORCE++: returns G_t = sum_{k >= t} gamma^(k - t) r_k (valid steps), A = masked_whiten(G)
    over the whole batch (mean and unbiased std of the valid tokens), 0 at masked positions.
    Any per-token KL penalty should already be folded into `token_rewards`."""
    ret = discounted_returns(token_rewards.to(torch.promote_types(token_rewards.dtype, torch.float32)), mask, gamma, dones)
    valid = (mask > 0).to(ret.dtype)
    return masked_whiten(ret, mask) * valid, ret


@torch.no_grad()
def reinforce_plus_plus_baseline(scores: Tensor, group_index: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """REINFORCE++ with group baseline: c_i = r_i - mean_g, broadcast over valid tokens (= returns),
    then A = masked_whiten(c) over the whole batch, 0 at masked positions."""
    mean, _, _, _ = group_stats(scores, group_index)
    valid = (mask > 0).to(mean.dtype)
    ret = (scores.to(mean.dtype) - mean)[:, None] * valid
    return masked_whiten(ret, mask) * valid, ret


# ----------------------------------------------------------------------------- uniform dispatch
@dataclass
class AdvantageInputs:
    """Everything an estimator may need; each estimator reads only its own fields.

    mask [B, T]; scores [B] (outcome reward per sequence); token_rewards [B, T] (per token / env
    step); values [B, T] (critic, for GAE); group_index [B] long (samples of one prompt / initial
    state share an index); dones [B, T] and bootstrap_values [B] (embodied GAE).
    """

    mask: Tensor
    scores: Optional[Tensor] = None
    token_rewards: Optional[Tensor] = None
    values: Optional[Tensor] = None
    group_index: Optional[Tensor] = None
    dones: Optional[Tensor] = None
    bootstrap_values: Optional[Tensor] = None
    gamma: float = 1.0
    lam: float = 1.0
    norm_by_std: bool = True
    eps: float = 1e-6

    def need(self, estimator: str, *fields: str) -> None:
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise ValueError(f"advantage estimator '{estimator}' needs {', '.join(missing)}")

    def rewards_per_token(self, estimator: str) -> Tensor:
        if self.token_rewards is not None:
            return self.token_rewards
        self.need(estimator, "scores")
        return scores_to_token_rewards(self.scores, self.mask)

    def scores_per_seq(self, estimator: str) -> Tensor:
        if self.scores is not None:
            return self.scores
        self.need(estimator, "token_rewards")
        return (self.token_rewards * (self.mask > 0).to(self.token_rewards.dtype)).sum(dim=1)


@ADV_ESTIMATORS.register("gae")
def _gae_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    x.need("gae", "values")
    return gae(x.rewards_per_token("gae"), x.values, x.mask, x.gamma, x.lam, x.dones, x.bootstrap_values)


@ADV_ESTIMATORS.register("grpo")
def _grpo_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    x.need("grpo", "group_index")
    return grpo(x.scores_per_seq("grpo"), x.group_index, x.mask, x.norm_by_std, x.eps)


@ADV_ESTIMATORS.register("drgrpo", "dr_grpo")
def _drgrpo_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    x.need("drgrpo", "group_index")
    return drgrpo(x.scores_per_seq("drgrpo"), x.group_index, x.mask)


@ADV_ESTIMATORS.register("rloo")
def _rloo_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    x.need("rloo", "group_index")
    return rloo(x.scores_per_seq("rloo"), x.group_index, x.mask)


@ADV_ESTIMATORS.register("reinforce_plus_plus")
def _rpp_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    return reinforce_plus_plus(x.rewards_per_token("reinforce_plus_plus"), x.mask, x.gamma, x.dones)


@ADV_ESTIMATORS.register("reinforce_plus_plus_baseline")
def _rppb_entry(x: AdvantageInputs) -> Tuple[Tensor, Tensor]:
    x.need("reinforce_plus_plus_baseline", "group_index")
    return reinforce_plus_plus_baseline(x.scores_per_seq("reinforce_plus_plus_baseline"), x.group_index, x.mask)


def compute_advantages(name: str, inputs: Optional[AdvantageInputs] = None, **fields) -> Tuple[Tensor, Tensor]:
    """Run the estimator registered as `name` (ConfigError if unknown) on `inputs`, or on
    `AdvantageInputs(**fields)` when `inputs` is not given. Returns (advantages, returns)."""
    fn = ADV_ESTIMATORS.get(name)
    if inputs is None:
        inputs = AdvantageInputs(**fields)
    elif fields:
        raise TypeError("pass either an AdvantageInputs or keyword fields, not both")
    return fn(inputs)
