"""Per-token KL estimators between the policy and a frozen reference (Schulman's k1/k2/k3).

With log r = ref_logp - logp on tokens sampled from the policy, each estimator estimates
KL(policy || ref) per token:

    k1 = -log r             = logp - ref_logp   (unbiased, high variance, can be negative)
    k2 = 0.5 (log r)^2                          (biased, low variance, >= 0)
    k3 = exp(log r) - log r - 1                 (unbiased, low variance, >= 0; verl's low_var_kl)

k3 clamps log r to [-20, 20] before exp and the result to [-10, 10], as verl does.
Registry `KL_ESTIMATORS` is selected by `algorithm.kl_estimator`.
"""

from __future__ import annotations

from torch import Tensor

from .registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator", key="algorithm.kl_estimator")


@KL_ESTIMATORS.register("k1", "kl")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2", "mse")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (ref_logp - logp)^2."""
    return 0.5 * (ref_logp - logp) ** 2


@KL_ESTIMATORS.register("k3", "low_var_kl")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(log r) - log r - 1 with log r = clamp(ref_logp - logp, -20, 20); result clamped to [-10, 10]."""
    log_r = (ref_logp - logp).clamp(-20.0, 20.0)
    return (log_r.exp() - log_r - 1.0).clamp(-10.0, 10.0)


def kl_penalty(logp: Tensor, ref_logp: Tensor, name: str = "k3") -> Tensor:
    """[B, T] per-token KL estimate by estimator `name` (ConfigError naming algorithm.kl_estimator
    if unknown). Fold it into rewards (r_t - kl_coef * kl_t) or aggregate it into the loss."""
    return KL_ESTIMATORS.get(name)(logp, ref_logp)


def kl_penalized_token_rewards(scores: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, coef: float,
                               name: str = "k1", token_rewards: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """KL in the reward (InstructGPT; verl's use_kl_in_reward). With kl_t the per-token estimate
    (`name`) on valid tokens:

        r_t = score * [t is the last valid token] - coef * kl_t,    KL_seq = sum_t kl_t

    Returns (token rewards [B, T], KL_seq [B]). The outcome score stays at the last token; the penalty
    is on every generated token, so GAE / REINFORCE++ see it per step and sequence-level estimators
    (GRPO, RLOO) see score - coef * KL_seq. `token_rewards` [B, T], when given, replaces the score at the
    last token (multi-turn episodes: per-turn rewards + the outcome at the last model token)."""
    from .advantages import scores_to_token_rewards

    valid = (mask > 0).to(logp.dtype)
    kl = kl_penalty(logp, ref_logp, name) * valid
    base = scores_to_token_rewards(scores.to(logp.dtype), mask) if token_rewards is None else token_rewards.to(logp.dtype)
    return base - coef * kl, kl.sum(dim=1)


class AdaptiveKLController:
    """The KL coefficient of Ziegler et al. (2019), section 2.2: a proportional controller that keeps
    the mean sequence KL near `target`. After a batch of n samples with mean sequence KL `kl`:

        e = clip(kl / target - 1, -0.2, 0.2),    coef <- coef * (1 + e * n / horizon)

    With `target` None the coefficient stays fixed. `state()` / `load()` carry it across checkpoints."""

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10000):
        self.coef, self.target, self.horizon = float(coef), target, horizon

    def update(self, kl: float, n: int) -> float:
        if self.target is not None and self.target > 0:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.coef *= 1.0 + error * n / self.horizon
        return self.coef

    def state(self) -> dict:
        return {"coef": self.coef}

    def load(self, state: dict) -> None:
        self.coef = float(state["coef"])
