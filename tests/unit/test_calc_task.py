"""The calc task (two-digit products for the calculator agent), its warm-start demonstrations, and the
transcripts the agent workflow writes."""

import json

import pytest

from rlinf.config.schema import DataConfig
from rlinf.envs.agent.trajectory import Segment, Trajectory
from rlinf.envs.text.calc import format_demos, load_calc, main, warm_start_demos
from rlinf.envs.text.conversations import render_conversation
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer
from rlinf.workflows.transcripts import accuracy_by_task, episode_record, write_transcripts

CHARS = "0123456789+-*/=<>_{}[]():,.!?;#%&\" \nabcdefghijklmnopqrstuvwxyz"


def test_split_holds_out_whole_pairs_and_answers_are_products():
    data = DataConfig(task="calc", min_operand=10, max_operand=19, train_size=300, eval_size=50)
    split = load_calc(data)
    held = {(s.meta["a"], s.meta["b"]) for s in split.eval}
    assert len(held) == len(split.eval) == 20  # 100 pairs, a fifth held out
    assert not held & {(s.meta["a"], s.meta["b"]) for s in split.train}
    s = split.train[0]
    assert s.prompt == f"{s.meta['a']}*{s.meta['b']}=" and s.answer == str(s.meta["a"] * s.meta["b"])
    with pytest.raises(InputError, match="data.min_operand"):
        load_calc(DataConfig(task="calc", min_operand=20, max_operand=19))


def test_demo_is_the_episode_the_env_plays():
    (row,) = format_demos([(37, 58)])
    assert row["messages"] == [
        {"role": "user", "content": "37*58="},
        {"role": "assistant", "content": '<tool_call>{"name": "calculator", "input": "37*58"}</tool_call>'},
        {"role": "tool", "content": "\n<tool_result>2146</tool_result>\n"},
        {"role": "assistant", "content": "<answer>2146</answer>"}]


def test_warm_start_demos_avoid_the_held_out_pairs():
    data = DataConfig(task="calc", min_operand=10, max_operand=14)
    held = {(s.meta["a"], s.meta["b"]) for s in load_calc(data).eval}
    demos = warm_start_demos(20, 0, data)  # all 20 pairs left of 25
    pairs = {tuple(int(x) for x in r["messages"][0]["content"].rstrip("=").split("*")) for r in demos}
    assert len(pairs) == 20 and not pairs & held
    with pytest.raises(InputError, match="--num"):
        warm_start_demos(21, 0, data)


def test_demos_cli_writes_jsonl_and_refuses_bad_num(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert main(["demos", "--out", str(out), "--num", "3"]) == 0
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 3
    bad = tmp_path / "bad.jsonl"
    assert main(["demos", "--out", str(bad), "--num", "0"]) == 2
    assert not bad.exists() and "--num" in capsys.readouterr().err


def test_sft_rendering_of_a_demo_has_loss_only_on_model_turns():
    tok = CharTokenizer(CHARS)
    (row,) = format_demos([(12, 34)])
    rendered = render_conversation(tok, row["messages"], max_length=400)
    call = '<tool_call>{"name": "calculator", "input": "12*34"}</tool_call>'
    result, answer = "\n<tool_result>408</tool_result>\n", "<answer>408</answer>"
    assert tok.decode(rendered.prompt_ids) == "12*34="
    loss_mask = [int(seg.is_model) for seg in rendered.segments for _ in seg.token_ids]
    assert loss_mask == [1] * len(call) + [0] * len(result) + [1] * (len(answer) + 1)  # + EOS
    assert tok.decode(rendered.response_ids) == call + result + answer


def _trajectory(tok, turns, reward):
    segs = [Segment.model(tok.encode(t), [0.0] * len(t)) if m else Segment.env(tok.encode(t)) for m, t in turns]
    return Trajectory(tok.encode("2*3="), segs, reward, 0, {"turns": sum(m for m, _ in turns),
                                                            "tool_calls": 1, "reason": "answer"})


def test_transcripts_show_every_turn_and_accuracy_per_task(tmp_path):
    tok = CharTokenizer(CHARS)

    class Sample:
        def __init__(self, prompt, answer, task):
            self.prompt, self.answer, self.meta = prompt, answer, {"task": task}

    right = _trajectory(tok, [(True, "<tool_call>x</tool_call>"), (False, "\n<tool_result>6</tool_result>\n"),
                              (True, "<answer>6</answer>")], 1.0)
    wrong = _trajectory(tok, [(True, "<answer>5</answer>")], 0.0)
    wrong.info.update(turns=1, tool_calls=0)
    records = [episode_record(right, Sample("2*3=", "6", "calc"), tok),
               episode_record(wrong, Sample("2*3=", "6", "calc"), tok),
               episode_record(right, Sample("2*3=", "6", "other"), tok)]
    assert [m["role"] for m in records[0]["messages"]] == ["model", "env", "model"]
    assert records[0]["messages"][1]["text"] == "\n<tool_result>6</tool_result>\n"
    stats = accuracy_by_task(records)
    assert stats["calc"] == {"num_episodes": 2, "accuracy": 0.5, "mean_reward": 0.5, "tool_call_rate": 0.5,
                             "mean_turns": 1.5}
    assert stats["other"]["accuracy"] == 1.0
    path = write_transcripts(records, tmp_path, "eval_step_3")
    assert [json.loads(line)["correct"] for line in path.read_text().splitlines()] == [True, False, True]
    md = (tmp_path / "eval_step_3.md").read_text()
    assert "**calc**: accuracy 50.0% over 2 episodes" in md and "<tool_result>6</tool_result>" in md
