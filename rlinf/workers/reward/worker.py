"""RewardWorker: scores (prompt, response, answer) triples with the configured verifier (`reward.type: rule`).

Both reward workers (this one and `RewardModelWorker`, `reward.type: model`) take the same
`score(items, update_stats)` call; `reward_worker_class` picks one by config. With `reward.in_rollout`
there is no reward group: the rollout ranks score their own responses with the same `RuleScorer`
(`ScoresOwnResponses`).
"""

import time
from typing import Dict, List, Sequence

from rlinf.config.schema import RewardConfig
from rlinf.errors import InputError
from rlinf.models.tokenizer import decode_responses
from rlinf.scheduler import Worker
from rlinf.workers.reward.verifiers import REWARDS


class ScoresGenerations:
    """Both reward workers: scoring a rollout rank's output directly (`ReasoningWorkflow.generate` passes
    it by reference, so the responses go from the rollout rank to this one without the controller)."""

    decode_with = None  # the run's tokenizer (attach_tokenizer)

    def attach_tokenizer(self, tokenizer) -> None:
        self.decode_with = tokenizer

    def score_generation(self, generation: Dict, prompt_texts: Sequence[str], answers: Sequence,
                         update_stats: bool = True) -> List[float]:
        """`score` of a rollout rank's `generate` output, row i with prompt_texts[i] and answers[i]."""
        if self.decode_with is None:
            raise RuntimeError("score_generation needs the run's tokenizer: call attach_tokenizer first")
        texts = decode_responses(self.decode_with, generation["responses"], generation["mask"])
        if not len(texts) == len(prompt_texts) == len(answers):
            raise ValueError(f"{len(texts)} responses for {len(prompt_texts)} prompts and {len(answers)} answers")
        return self.score(list(zip(prompt_texts, texts, answers)), update_stats)


class RuleScorer:
    """The verifier `reward.name`: [(prompt_text, response_text, answer)] -> rewards, where a wrong but
    non-empty answer earns `reward.format_reward`. Keeps no state."""

    def __init__(self, cfg: RewardConfig):
        self.fn = REWARDS.get(cfg.name)
        self.format_reward = cfg.format_reward

    def score(self, items: Sequence[tuple]) -> List[float]:
        out = []
        for _prompt, response, answer in items:
            r = self.fn(response, answer)
            out.append(r if r > 0 or not response.strip() else self.format_reward)
        return out


class ScoresOwnResponses(ScoresGenerations):
    """Rollout ranks that score what they generate (`reward.in_rollout`, rule verifiers): one call
    generates and scores, so no reward group and no hop between generating and scoring."""

    rule = None  # attach_scorer

    def attach_scorer(self, tokenizer, cfg: RewardConfig) -> None:
        self.attach_tokenizer(tokenizer)
        self.rule = RuleScorer(cfg)

    def score(self, items: Sequence[tuple], update_stats: bool = True) -> List[float]:
        """`RewardWorker.score` (`update_stats` unused: verifiers keep no statistics)."""
        if self.rule is None:
            raise RuntimeError("this rollout rank has no verifier: call attach_scorer first")
        return self.rule.score(items)

    def generate_scored(self, prompts: Sequence[Sequence[int]], prompt_texts: Sequence[str], answers: Sequence,
                        greedy: bool = False, seed: int | None = None) -> Dict[str, object]:
        """`generate`, plus `scores` (one per row, `score_generation`; on the timeline as `score`)."""
        out = self.generate(prompts, greedy=greedy, seed=seed)
        start = time.time()
        out["scores"] = self.score_generation(out, prompt_texts, answers)
        self.record_event("score", start, time.time())
        return out


class RewardWorker(ScoresGenerations, Worker):
    INIT_DIST = False  # ranks score independently; no collectives

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.rule = RuleScorer(cfg)

    @staticmethod
    def has_state(cfg: RewardConfig) -> bool:
        """Verifiers keep no state a resumed run needs."""
        return False

    def score(self, items: Sequence[tuple], update_stats: bool = True) -> List[float]:
        """[(prompt_text, response_text, answer)] -> rewards (`RuleScorer`). The prompt and `update_stats`
        are unused (the signature is the reward model's)."""
        return self.rule.score(items)


MODEL = "model"  # the reward model's name in reward.weights


def check_weights(weights: Dict[str, float]) -> None:
    """`reward.weights` names only 'model' and registered verifiers."""
    unknown = [n for n in weights if n != MODEL and n not in REWARDS]
    if unknown:
        raise InputError(f"unknown reward source(s) {unknown}; known: '{MODEL}' and the verifiers "
                         f"{', '.join(REWARDS.names())}", key="reward.weights")


def validate_reward(cfg: RewardConfig) -> None:
    """Names in the reward section, checked before any worker starts (nothing is loaded)."""
    REWARDS.get(cfg.name)
    if cfg.type == "model":
        check_weights(cfg.weights)


def reward_worker_class(cfg: RewardConfig) -> type:
    """The reward group's worker class for `reward.type`."""
    if cfg.type == "model":
        from rlinf.workers.reward.model_worker import RewardModelWorker

        return RewardModelWorker
    return RewardWorker
