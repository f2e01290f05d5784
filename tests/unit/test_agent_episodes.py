"""run_episodes: a deterministic stub policy plays ToolEnv episodes (char-level tokenizer); the records
and the training rows built from them have model / tool segments, log-probs and rewards where expected."""

import re

import pytest

from rlinf.envs.agent import ToolEnv
from rlinf.envs.agent.episodes import cut_at_stop, run_episodes
from rlinf.envs.text import TextSample
from rlinf.workflows.multiturn import build_multiturn_rows


def encode(text):
    return [ord(c) for c in text]


def decode(ids):
    return "".join(chr(i) for i in ids)


def exact(response, answer):
    return 1.0 if response.strip() == answer.strip() else 0.0


CALL = '<tool_call>{"name": "calculator", "input": "12*34"}</tool_call>'
BAD_CALL = "<tool_call>12*34</tool_call>"


def stub_generate(contexts):
    """Solver: call the calculator on the prompt's expression, then answer with the tool result; prompts
    with 'loop' make malformed calls forever. Text after the stop string must be cut by the driver.
    Log-prob of the k-th generated token: -0.01 * (k + 1)."""
    turns = []
    for ctx in contexts:
        text = decode(ctx)
        if "loop" in text:
            turns.append(BAD_CALL + " and more")
        elif text.endswith("</tool_result>\n"):
            turns.append(f"<answer>{re.findall(r'<tool_result>(.*?)</tool_result>', text)[-1]}</answer>")
        else:
            expr = re.search(r"What is (\S+)\?", text).group(1)
            turns.append(f'<tool_call>{{"name": "calculator", "input": "{expr}"}}</tool_call> junk after the stop')
    tokens = [encode(t) for t in turns]
    return tokens, [[-0.01 * (k + 1) for k in range(len(t))] for t in tokens]


def play():
    envs = [ToolEnv(exact, system_prompt=None), ToolEnv(exact, max_turns=2, malformed_call_reward=-0.1, system_prompt=None)]
    samples = [TextSample("What is 12*34?", "408"), TextSample("loop forever", "0")]
    return run_episodes(envs, samples, stub_generate, encode, decode, group_indices=[7, 7])


def test_solver_episode_record():
    solved = play()[0]
    assert decode(solved.prompt_ids) == "What is 12*34?"
    assert [(s.is_model, decode(s.token_ids)) for s in solved.segments] == [
        (True, CALL), (False, "\n<tool_result>408</tool_result>\n"), (True, "<answer>408</answer>")]
    assert solved.segments[0].logprobs == [-0.01 * (k + 1) for k in range(len(CALL))]  # junk cut
    assert (solved.reward, solved.total_reward, solved.group_index) == (1.0, 1.0, 7)
    assert solved.info.pop("tool_seconds") > 0.0  # the calculator's elapsed time
    assert solved.info == {"turns": 2, "tool_calls": 1, "tool_errors": 0, "reason": "answer", "truncated": False}


def test_truncated_episode_has_turn_penalties_and_no_trailing_observation():
    looped = play()[1]
    kinds = [s.is_model for s in looped.segments]
    assert kinds == [True, False, True]
    assert [decode(s.token_ids) for s in looped.segments if s.is_model] == [BAD_CALL, BAD_CALL]
    assert [s.reward for s in looped.segments] == [-0.1, 0.0, -0.1]
    assert (looped.reward, round(looped.total_reward, 6)) == (0.0, -0.2)
    assert looped.info == {"turns": 2, "tool_calls": 2, "tool_seconds": 0.0, "tool_errors": 2, "reason": "max_turns",
                           "truncated": True}  # malformed calls run no tool and count as errors


def test_rows_from_played_episodes():
    trajectories = play()
    rows = build_multiturn_rows(trajectories, pad_id=0)
    mask, rewards = rows.batch["response_mask"], rows.token_rewards
    n_call, n_obs, n_ans = len(CALL), len("\n<tool_result>408</tool_result>\n"), len("<answer>408</answer>")
    assert mask[0].tolist()[:n_call + n_obs + n_ans] == [1.0] * n_call + [0.0] * n_obs + [1.0] * n_ans
    assert rewards[0].nonzero().flatten().tolist() == [n_call + n_obs + n_ans - 1]
    assert rewards[0, n_call + n_obs + n_ans - 1].item() == 1.0
    n_bad, n_obs_bad = len(BAD_CALL), len(decode(trajectories[1].segments[1].token_ids))
    assert rewards[1].nonzero().flatten().tolist() == [n_bad - 1, n_bad + n_obs_bad + n_bad - 1]
    assert rows.scores.tolist() == pytest.approx([1.0, -0.2])
    assert rows.group_index.tolist() == [7, 7]


def test_cut_at_stop_keeps_the_stop_string_and_drops_the_rest():
    ids, logp = cut_at_stop(encode("<answer>4</answer>xyz"), [0.0] * 21, decode)
    assert (decode(ids), len(logp)) == ("<answer>4</answer>", 18)
    ids, _ = cut_at_stop(encode("no stop here"), [0.0] * 12, decode)
    assert decode(ids) == "no stop here"
