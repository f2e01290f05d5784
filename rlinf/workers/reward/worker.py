"""RewardWorker: scores (response, answer) pairs with the configured verifier."""

from typing import List, Sequence

from rlinf.config.schema import RewardConfig
from rlinf.scheduler import Worker
from rlinf.workers.reward.verifiers import REWARDS


class RewardWorker(Worker):
    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.fn = REWARDS.get(cfg.name)
        self.format_reward = cfg.format_reward

    def score(self, pairs: Sequence[tuple]) -> List[float]:
        """[(response_text, answer)] -> rewards; a wrong but non-empty answer earns `format_reward`."""
        out = []
        for response, answer in pairs:
            r = self.fn(response, answer)
            out.append(r if r > 0 or not response.strip() else self.format_reward)
        return out
