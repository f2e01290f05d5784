"""Reward: rule-based verifiers selected by name."""

from rlinf.workers.reward.verifiers import REWARDS, extract_answer
from rlinf.workers.reward.worker import RewardWorker

__all__ = ["REWARDS", "RewardWorker", "extract_answer"]
