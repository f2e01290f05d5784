"""Verifiable rewards: `fn(response, answer) -> float` in a registry keyed by `reward.name`.

- exact_match: the response's final answer (after `####`, inside `\\boxed{}`, or the whole stripped
  text) equals the reference string, numbers compared numerically.
- digits: for fixed-width answers: the exact string scores 1; otherwise 0.5 x the fraction of
  positions right (a dense, still verifiable signal for models trained from scratch). Strings are
  compared as written, so a reversed "70" never matches "07".
- math_verify: `math-verify` parses both sides (LaTeX, fractions, GSM8K `#### 42`) and checks equality.
"""

import re
from typing import Callable, Optional

from rlinf.algorithms.registry import Registry

RewardFn = Callable[[str, str], float]
REWARDS: Registry = Registry("reward function", key="reward.name")

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_answer(text: str) -> str:
    """The final answer in a response: after the last '####', else the last \\boxed{...}, else the text."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().splitlines()[0].strip() if text.rsplit("####", 1)[1].strip() else ""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    return text.strip()


def _as_number(text: str) -> Optional[float]:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


@REWARDS.register("exact_match")
def exact_match(response: str, answer: str) -> float:
    got, want = extract_answer(response), answer.strip()
    if got == want:
        return 1.0
    a, b = _as_number(got), _as_number(want)
    return 1.0 if a is not None and b is not None and a == b else 0.0


@REWARDS.register("digits")
def digits(response: str, answer: str) -> float:
    got, want = extract_answer(response), answer.strip()
    if got == want:
        return 1.0
    if not want:
        return 0.0
    return 0.5 * sum(g == w for g, w in zip(got, want)) / len(want)


@REWARDS.register("math_verify")
def math_verify(response: str, answer: str) -> float:
    from math_verify import parse, verify

    gold = parse(answer if any(c in answer for c in "$\\") else f"${answer}$")
    target = extract_answer(response)
    pred = parse(target if any(c in target for c in "$\\") else f"${target}$")
    return 1.0 if gold and pred and verify(gold, pred) else 0.0


@REWARDS.register("synthetic_gold")
def synthetic_gold(response: str, answer: str) -> float:
    """The hidden gold reward of `data.task: synthetic_prompts` (answer = the letter the prompt names):
    `rlinf.envs.text.synthetic_preference.gold_reward`. Used to watch a learned reward model's policy
    (reward.eval_verifiers: {gold: synthetic_gold}), not to train on."""
    from rlinf.envs.text.synthetic_preference import gold_reward, make_prompt

    return gold_reward(make_prompt(answer), response)
