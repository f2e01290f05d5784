"""A text / tool environment with the env-worker interface shape: the language model is the policy.

    env = ToolEnv(verifier=exact_match, tools=("calculator",), max_turns=4, max_total_tokens=1024)
    messages = env.reset(sample)                  # [{"role": "system", ...}, {"role": "user", ...}]
    obs, reward, done, info = env.step(turn)      # turn: the text the model generated this turn

Formats (documented to the model by `SYSTEM_PROMPT`; parsed with strict regexes and `json.loads`,
never `eval`):

- tool call: ``<tool_call>{"name": "calculator", "input": "123 * 456"}</tool_call>``; the JSON must be
  one object with exactly the string fields `name` and `input`. The chat-template form of Qwen2.5 /
  Hermes-style tool-calling models, ``<tool_call>{"name": "calculator", "arguments": {"expression":
  "123 * 456"}}</tool_call>``, is read too: `arguments` an object with exactly one string value (its key
  is free), which becomes the tool's input. The first call of a turn is run (later
  ones are ignored and counted in `info["extra_tool_calls"]`) through `rlinf.tools.call`; its output, or
  its error, comes back as the observation ``<tool_result>...</tool_result>`` (with a newline either side)
  which the caller appends to the context.
- final answer: ``<answer>42</answer>``; ends the episode, graded by `verifier(answer_text,
  sample.answer)` (any `fn(response, answer) -> float` of `rlinf.workers.reward.verifiers.REWARDS`, passed
  in by the caller: envs sit below workers and do not import them).
  Whichever tag opens first in a turn decides whether the turn is a tool call or an answer.
- a turn with neither ends the episode with reward 0 (`info["reason"] = "no_action"`).

Rewards: the step reward is `malformed_call_reward` for a tool call that does not parse (JSON, fields,
a tool not in `tools`), the verifier's grade on an answer turn, else 0. The rollout should stop each
turn at one of `STOP_STRINGS` (or EOS).

Episode ends (`done`, with `info["reason"]`): `answer`, `no_action`; or truncated
(`info["truncated"] = True`): `max_turns` after the `max_turns`-th model turn without an answer,
`token_budget` once prompt + model turns + observations reach `max_total_tokens` tokens as counted by
`count_tokens` (pass the policy tokenizer's `lambda s: len(tok.encode(s))`; the default counts characters,
an upper bound for any sub-word tokenizer). A truncated episode's last step reward is 0 (+ the turn's
own per-turn reward); the observation is still returned (for transcripts) but the episode is over.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rlinf.tools import call as call_tool

logger = logging.getLogger(__name__)

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
STOP_STRINGS = ("</tool_call>", "</answer>")

SYSTEM_PROMPT = (
    "You can use tools. To call one, write exactly one line "
    '<tool_call>{{"name": "TOOL", "input": "TEXT"}}</tool_call> and stop; the result comes back as '
    "<tool_result>...</tool_result>. Available tools: {tools}. When you know the final answer, write "
    "<answer>ANSWER</answer>."
)

Verifier = Callable[[str, str], float]
Messages = List[Dict[str, str]]


@dataclass
class ParsedTurn:
    """What one model turn asks for: kind is 'tool', 'answer', 'malformed' or 'none'."""

    kind: str
    tool: Optional[str] = None
    tool_input: Optional[str] = None
    answer: Optional[str] = None
    error: Optional[str] = None
    extra_tool_calls: int = 0


def parse_tool_call(payload: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """JSON object with exactly string fields `name` and `input` (or `name` and an `arguments` object with
    one string value) -> (name, input, None), or (None, None, error) naming what is wrong."""
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as exc:
        return None, None, f"tool call is not valid JSON ({exc.msg} at char {exc.pos})"
    if isinstance(obj, dict) and set(obj) == {"name", "arguments"}:
        args = obj["arguments"]
        if not isinstance(args, dict) or len(args) != 1 or not isinstance(next(iter(args.values())), str):
            return None, None, 'tool call "arguments" must be an object with exactly one string value'
        obj = {"name": obj["name"], "input": next(iter(args.values()))}
    if not isinstance(obj, dict) or set(obj) != {"name", "input"}:
        return None, None, 'tool call must be a JSON object with exactly the fields "name" and "input"'
    if not isinstance(obj["name"], str) or not isinstance(obj["input"], str):
        return None, None, 'tool call fields "name" and "input" must be strings'
    return obj["name"], obj["input"], None


def parse_turn(text: str) -> ParsedTurn:
    """Classify a model turn by the first opening tag (`<tool_call>` or `<answer>`) that is closed."""
    call_m, answer_m = TOOL_CALL_RE.search(text), ANSWER_RE.search(text)
    if answer_m and (call_m is None or answer_m.start() < call_m.start()):
        return ParsedTurn("answer", answer=answer_m.group(1).strip())
    if call_m is None:
        return ParsedTurn("none")
    extra = len(TOOL_CALL_RE.findall(text)) - 1
    name, tool_input, error = parse_tool_call(call_m.group(1).strip())
    if error is not None:
        return ParsedTurn("malformed", error=error, extra_tool_calls=extra)
    return ParsedTurn("tool", tool=name, tool_input=tool_input, extra_tool_calls=extra)


def char_count(text: str) -> int:
    """Default token counter: characters (an upper bound on sub-word tokens)."""
    return len(text)


class ToolEnv:
    """One multi-turn episode at a time over `TextSample`-like samples (`.prompt`, `.answer`).

    Pure Python: no Ray, no tokenizer (token counts come from `count_tokens`). Tool options per tool
    name (`tool_options={"python": {"limits": {...}}}`) are passed to `rlinf.tools.call`.
    """

    def __init__(self, verifier: Verifier, tools: Sequence[str] = ("calculator",), max_turns: int = 4,
                 max_total_tokens: int = 4096, count_tokens: Callable[[str], int] = char_count,
                 malformed_call_reward: float = 0.0, max_observation_chars: int = 2000,
                 system_prompt: Optional[str] = SYSTEM_PROMPT,
                 tool_options: Optional[Dict[str, Dict[str, Any]]] = None):
        if max_turns < 1 or max_total_tokens < 1:
            raise ValueError(f"max_turns and max_total_tokens must be >= 1, got {max_turns}, {max_total_tokens}")
        self.verifier = verifier
        self.tools = tuple(tools)
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.count_tokens = count_tokens
        self.malformed_call_reward = malformed_call_reward
        self.max_observation_chars = max_observation_chars
        self.system_prompt = system_prompt
        self.tool_options = tool_options or {}
        self.sample = None
        self.turn = 0
        self.tokens_used = 0
        self.done = True

    def reset(self, sample) -> Messages:
        """Start an episode on `sample`; returns the initial chat messages (system, user)."""
        self.sample = sample
        self.turn = 0
        self.done = False
        messages: Messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt.format(tools=", ".join(self.tools))})
        messages.append({"role": "user", "content": sample.prompt})
        self.tokens_used = sum(self.count_tokens(m["content"]) for m in messages)
        return messages

    def step(self, model_turn: str) -> Tuple[str, float, bool, Dict[str, Any]]:
        """Consume one model turn; returns (observation_text, reward, done, info) as the module docstring
        describes. Calling step on a finished episode (or before reset) raises RuntimeError."""
        if self.done:
            raise RuntimeError("step() on a finished episode: call reset(sample) first")
        self.turn += 1
        self.tokens_used += self.count_tokens(model_turn)
        parsed = parse_turn(model_turn)
        info: Dict[str, Any] = {"turn": self.turn, "kind": parsed.kind, "truncated": False,
                                "extra_tool_calls": parsed.extra_tool_calls}
        if parsed.kind == "answer":
            reward = float(self.verifier(parsed.answer, str(self.sample.answer)))
            return "", reward, self._finish(info, "answer"), info
        if parsed.kind == "none":
            return "", 0.0, self._finish(info, "no_action"), info
        observation, reward = self._run_tool(parsed, info)
        self.tokens_used += self.count_tokens(observation)
        info["tokens_used"] = self.tokens_used
        if self.turn >= self.max_turns:
            return observation, reward, self._finish(info, "max_turns", truncated=True), info
        if self.tokens_used >= self.max_total_tokens:
            return observation, reward, self._finish(info, "token_budget", truncated=True), info
        return observation, reward, False, info

    def _run_tool(self, parsed: ParsedTurn, info: Dict[str, Any]) -> Tuple[str, float]:
        """Observation text and per-turn reward of a tool (or malformed) turn; fills info."""
        if parsed.kind == "tool" and parsed.tool not in self.tools:
            parsed = ParsedTurn("malformed", error=f"unknown tool '{parsed.tool}'; available: {', '.join(self.tools)}")
            info["kind"] = "malformed"
        if parsed.kind == "malformed":
            info.update(tool=None, tool_ok=False, error=parsed.error)
            return self.wrap_observation(f"error: {parsed.error}"), self.malformed_call_reward
        result = call_tool(parsed.tool, parsed.tool_input, **self.tool_options.get(parsed.tool, {}))
        info.update(tool=parsed.tool, tool_ok=result.ok, tool_elapsed=result.elapsed, error=result.error)
        return self.wrap_observation(result.observation()), 0.0

    def wrap_observation(self, text: str) -> str:
        """`\\n<tool_result>TEXT</tool_result>\\n`, TEXT cut to `max_observation_chars` (marked)."""
        if len(text) > self.max_observation_chars:
            text = text[:self.max_observation_chars] + f"... [cut at {self.max_observation_chars} chars]"
        return f"\n<tool_result>{text}</tool_result>\n"

    def _finish(self, info: Dict[str, Any], reason: str, truncated: bool = False) -> bool:
        self.done = True
        info.update(reason=reason, truncated=truncated, tokens_used=self.tokens_used)
        return True
