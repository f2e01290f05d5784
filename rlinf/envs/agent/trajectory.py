"""The token record of one multi-turn episode, as an env worker hands it to the trainer.

    Trajectory(prompt_ids, segments=[Segment(model turn), Segment(tool result), Segment(model turn), ...],
               reward=outcome reward, group_index=prompt id)

A model segment holds the tokens the policy generated in one turn, their behaviour log-probs (one per
token) and the per-turn reward that turn earned (e.g. a malformed-call penalty); an env segment holds the
tokens the environment appended (tool results, role headers of a chat template), which carry no
log-prob and never get loss. `rlinf.workflows.multiturn` turns a list of these into training rows.
Plain Python lists: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Segment:
    """One span of the response: `is_model` tokens with `logprobs` (same length), or env tokens."""

    token_ids: List[int]
    is_model: bool
    logprobs: Optional[List[float]] = None
    reward: float = 0.0

    def __post_init__(self):
        if self.is_model:
            if self.logprobs is None or len(self.logprobs) != len(self.token_ids):
                n = None if self.logprobs is None else len(self.logprobs)
                raise ValueError(f"a model segment needs one log-prob per token: {len(self.token_ids)} tokens, {n} log-probs")
        elif self.logprobs is not None:
            raise ValueError("an env segment carries no log-probs")
        elif self.reward != 0.0:
            raise ValueError("per-turn rewards belong to the model turn that earned them, not to an env segment")

    @staticmethod
    def model(token_ids: List[int], logprobs: List[float], reward: float = 0.0) -> "Segment":
        return Segment(list(token_ids), True, list(logprobs), reward)

    @staticmethod
    def env(token_ids: List[int]) -> "Segment":
        return Segment(list(token_ids), False)


@dataclass
class Trajectory:
    """prompt_ids, then the response segments in order; `reward` is the outcome reward (placed at the
    last model token); `group_index` groups samples of one prompt (GRPO / RLOO); `info` is free-form
    (turns, truncation reason, tool calls) for metrics and transcripts."""

    prompt_ids: List[int]
    segments: List[Segment] = field(default_factory=list)
    reward: float = 0.0
    group_index: int = 0
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def response_ids(self) -> List[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def num_model_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.is_model)

    @property
    def total_reward(self) -> float:
        """Outcome reward + every per-turn reward: the sequence score GRPO / RLOO compare."""
        return self.reward + sum(s.reward for s in self.segments)
