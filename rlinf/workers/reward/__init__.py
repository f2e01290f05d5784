"""Reward: rule-based verifiers selected by name (`reward.type: rule`) or a learned reward model served
by the reward group (`reward.type: model`, rlinf.workers.reward.model_worker)."""

from rlinf.workers.reward.verifiers import REWARDS, extract_answer
from rlinf.workers.reward.worker import RewardWorker, reward_worker_class, validate_reward

__all__ = ["REWARDS", "RewardWorker", "extract_answer", "reward_worker_class", "validate_reward"]
