"""Pure tensor RL algorithms (torch only): advantage estimators, policy/value losses, KL
estimators, loss aggregation and DAPO dynamic sampling, selected by name through registries.

Registries and the config keys that select from them:
    ADV_ESTIMATORS  algorithm.adv_estimator   (compute_advantages)
    POLICY_LOSSES   algorithm.policy_loss     (compute_policy_loss)
    KL_ESTIMATORS   algorithm.kl_estimator    (kl_penalty)
    LOSS_AGG        algorithm.loss_agg        (aggregate_loss)
    PAIRWISE_LOSSES (reward-model training)   (bradley_terry_loss)
An unknown name raises rlinf.errors.ConfigError naming the key and the closest known name.
"""

from .advantages import (
    ADV_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    discounted_returns,
    drgrpo,
    gae,
    group_stats,
    grpo,
    masked_mean,
    masked_var,
    masked_whiten,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    rloo,
    scores_to_token_rewards,
)
from .kl import KL_ESTIMATORS, AdaptiveKLController, k1, k2, k3, kl_penalized_token_rewards, kl_penalty
from .losses import (
    LOSS_AGG,
    PAIRWISE_LOSSES,
    POLICY_LOSSES,
    aggregate_loss,
    bradley_terry_loss,
    compute_policy_loss,
    entropy_from_logits,
    gspo,
    logprobs_from_logits,
    ppo,
    reinforce,
    value_loss,
)
from .registry import Registry
from .sampling import dynamic_sampling_mask

__all__ = [
    "ADV_ESTIMATORS", "AdvantageInputs", "compute_advantages", "discounted_returns", "drgrpo", "gae",
    "group_stats", "grpo", "masked_mean", "masked_var", "masked_whiten", "reinforce_plus_plus",
    "reinforce_plus_plus_baseline", "rloo", "scores_to_token_rewards",
    "KL_ESTIMATORS", "AdaptiveKLController", "k1", "k2", "k3", "kl_penalized_token_rewards", "kl_penalty",
    "LOSS_AGG", "PAIRWISE_LOSSES", "POLICY_LOSSES", "aggregate_loss", "bradley_terry_loss", "compute_policy_loss", "entropy_from_logits", "gspo",
    "logprobs_from_logits", "ppo", "reinforce", "value_loss",
    "Registry", "dynamic_sampling_mask",
]
