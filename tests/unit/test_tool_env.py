"""ToolEnv: the documented tool-call / answer formats, observations from rlinf.tools, grading by a
verifier, per-turn penalty for malformed calls, and the max_turns / token-budget ends."""

import pytest

from rlinf.envs.agent import ToolEnv, parse_tool_call, parse_turn
from rlinf.envs.text import TextSample


def exact(response: str, answer: str) -> float:
    """Stand-in for REWARDS['exact_match'] (importing rlinf.workers pulls in Ray): exact string match."""
    return 1.0 if response.strip() == answer.strip() else 0.0


SAMPLE = TextSample(prompt="What is 123*456?", answer="56088")


def calc_turn(expr: str) -> str:
    return f'Let me compute. <tool_call>{{"name": "calculator", "input": "{expr}"}}</tool_call>'


def test_reset_gives_system_and_user_messages():
    env = ToolEnv(exact)
    msgs = env.reset(SAMPLE)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == "What is 123*456?"
    assert "<tool_call>" in msgs[0]["content"] and "calculator" in msgs[0]["content"]
    assert env.tokens_used == len(msgs[0]["content"]) + len(msgs[1]["content"])


def test_tool_call_runs_calculator_then_answer_is_graded():
    env = ToolEnv(exact, malformed_call_reward=-0.1)
    env.reset(SAMPLE)
    obs, reward, done, info = env.step(calc_turn("123*456"))
    assert obs == "\n<tool_result>56088</tool_result>\n"
    assert (reward, done) == (0.0, False)
    assert info["tool"] == "calculator" and info["tool_ok"] and info["turn"] == 1
    obs, reward, done, info = env.step("So <answer>56088</answer>")
    assert (obs, reward, done) == ("", 1.0, True)
    assert info["reason"] == "answer" and not info["truncated"] and info["turn"] == 2


def test_wrong_answer_scores_zero_and_step_after_done_raises():
    env = ToolEnv(exact)
    env.reset(SAMPLE)
    assert env.step("<answer>56000</answer>")[1:3] == (0.0, True)
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step("<answer>56088</answer>")


@pytest.mark.parametrize("turn, fragment", [
    ("<tool_call>calculator: 2+3</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "calculator"}</tool_call>', 'exactly the fields "name" and "input"'),
    ('<tool_call>{"name": "calculator", "input": 5}</tool_call>', "must be strings"),
    ('<tool_call>["calculator", "2+3"]</tool_call>', "JSON object"),
    ('<tool_call>{"name": "python", "input": "print(1)"}</tool_call>', "unknown tool 'python'; available: calculator"),
])
def test_malformed_call_is_an_error_observation_with_penalty(turn, fragment):
    env = ToolEnv(exact, malformed_call_reward=-0.1)
    env.reset(SAMPLE)
    obs, reward, done, info = env.step(turn)
    assert obs.startswith("\n<tool_result>error: ") and fragment in obs
    assert (reward, done, info["kind"], info["tool_ok"]) == (-0.1, False, "malformed", False)


def test_tool_failure_is_an_observation_not_a_penalty_and_never_eval():
    env = ToolEnv(exact, malformed_call_reward=-0.1)
    env.reset(SAMPLE)
    obs, reward, done, info = env.step(calc_turn("__import__('os')"))
    assert "error: " in obs and "__import__" in obs
    assert (reward, done, info["tool_ok"]) == (0.0, False, False)


def test_first_tag_decides_and_extra_calls_are_counted():
    turn = parse_turn('<tool_call>{"name": "calculator", "input": "1+1"}</tool_call>'
                      '<tool_call>{"name": "calculator", "input": "2+2"}</tool_call><answer>4</answer>')
    assert (turn.kind, turn.tool_input, turn.extra_tool_calls) == ("tool", "1+1", 1)
    assert parse_turn('<answer>7</answer> <tool_call>{"name": "calculator", "input": "1"}</tool_call>').answer == "7"
    assert parse_turn("<answer>unclosed").kind == "none"
    assert parse_tool_call('{"name": "calculator", "input": "1", "x": 2}')[2] is not None


def test_no_action_ends_with_zero_reward():
    env = ToolEnv(exact)
    env.reset(SAMPLE)
    obs, reward, done, info = env.step("I think it is 56088")
    assert (obs, reward, done, info["reason"], info["truncated"]) == ("", 0.0, True, "no_action", False)


def test_max_turns_truncates():
    env = ToolEnv(exact, max_turns=2)
    env.reset(SAMPLE)
    assert env.step(calc_turn("1+1"))[2] is False
    obs, reward, done, info = env.step(calc_turn("2+2"))
    assert obs == "\n<tool_result>4</tool_result>\n"
    assert (reward, done, info["reason"], info["truncated"], info["turn"]) == (0.0, True, "max_turns", True, 2)


def test_token_budget_truncates_counting_prompt_turns_and_observations():
    words = lambda s: len(s.split())  # noqa: E731 - a toy tokenizer: one token per word
    env = ToolEnv(exact, max_total_tokens=10, count_tokens=words, system_prompt=None)
    env.reset(TextSample(prompt="add two numbers please", answer="3"))  # 4 tokens
    turn = '<tool_call>{"name": "calculator", "input": "1+2"}</tool_call>'  # 4 words
    obs, _, done, info = env.step(turn)  # + 4 + 1 (observation "<tool_result>3</tool_result>") = 9
    assert (done, info["tokens_used"]) == (False, 9)
    obs, _, done, info = env.step(turn)  # 9 + 5 = 14 >= 10
    assert (done, info["reason"], info["truncated"], info["tokens_used"]) == (True, "token_budget", True, 14)


def test_long_observation_is_cut():
    env = ToolEnv(exact, max_observation_chars=5)
    env.reset(SAMPLE)
    obs = env.step(calc_turn("2**100"))[0]
    assert obs == "\n<tool_result>12676... [cut at 5 chars]</tool_result>\n"


def test_chat_template_tool_call_form_is_read():
    """Qwen2.5 / Hermes-style `{"name", "arguments": {...}}` inside the same tags: one string argument."""
    assert parse_tool_call('{"name": "calculator", "arguments": {"expression": "12*34"}}') == ("calculator", "12*34", None)
    for bad in ('{"name": "calculator", "arguments": {"a": "1", "b": "2"}}',
                '{"name": "calculator", "arguments": {"a": 1}}', '{"name": "calculator", "arguments": "1+1"}'):
        name, tool_input, error = parse_tool_call(bad)
        assert (name, tool_input) == (None, None) and "arguments" in error
    env = ToolEnv(exact)
    env.reset(SAMPLE)
    obs, _, done, info = env.step('<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*34"}}\n</tool_call>')
    assert (obs, done, info["tool_ok"]) == ("\n<tool_result>408</tool_result>\n", False, True)
