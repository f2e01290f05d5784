"""Prompt and preference files (jsonl, parquet, arrow) through `datasets`: rows, columns, held-out split,
errors naming file / row / column, and the chat-template path of the pair encoding."""

import json
from pathlib import Path

import pytest

from rlinf.config.schema import DataConfig
from rlinf.envs.text import PreferencePair, load_task
from rlinf.envs.text.files import encode_pairs
from rlinf.models.tokenizer import conversation_ids as encode_conversation
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer

ROWS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "m": float(i) / 2} for i in range(6)]


def _write(path: Path, rows) -> Path:
    """rows -> a jsonl, parquet or arrow file (by suffix); arrow as `datasets` writes it (IPC stream)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return path


def _cfg(path, **kw) -> DataConfig:
    return DataConfig(task=kw.pop("task", "preference"), path=str(path), eval_size=kw.pop("eval_size", 2), **kw)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".arrow"])
def test_preference_file_rows_columns_and_held_out_tail(tmp_path, suffix):
    split = load_task(_cfg(_write(tmp_path / f"pairs{suffix}", ROWS), margin_key="m"))
    assert [p.prompt for p in split.train] == ["q0", "q1", "q2", "q3"]
    assert [p.prompt for p in split.eval] == ["q4", "q5"]  # the last data.eval_size rows, in file order
    assert split.eval[1] == PreferencePair("q5", "good 5", "bad 5", 2.5, {"row": 6})


def test_eval_path_and_renamed_columns(tmp_path):
    rows = [{"question": f"q{i}", "win": "w", "lose": "l"} for i in range(3)]
    train = _write(tmp_path / "train.jsonl", rows)
    held = _write(tmp_path / "held.parquet", rows[:1])
    split = load_task(_cfg(train, eval_path=str(held), prompt_key="question", chosen_key="win", rejected_key="lose"))
    assert len(split.train) == 3 and len(split.eval) == 1
    assert split.train[0].margin == 0.0 and split.train[0].chosen == "w"


def test_prompt_file_with_and_without_answers(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "ans": str(i)} for i in range(4)])
    split = load_task(_cfg(path, task="prompts", answer_key="ans", eval_size=1))
    assert [(s.prompt, s.answer) for s in split.train] == [("p0", "0"), ("p1", "1"), ("p2", "2")]
    assert load_task(_cfg(path, task="prompts", eval_size=1)).eval[0].answer == ""


def test_jsonl_with_blank_lines_reads(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n\n")
    assert len(load_task(_cfg(path, eval_size=1)).train) == 2


def _error(cfg) -> str:
    with pytest.raises(InputError) as info:
        load_task(cfg)
    return str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    assert "data.path: data file not found" in _error(_cfg(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a\n")
    assert "unknown file format '.csv'" in _error(_cfg(tmp_path / "x.csv"))
    ok = _write(tmp_path / "ok.jsonl", ROWS)
    assert "data.eval_path: data file not found" in _error(_cfg(ok, eval_path=str(tmp_path / "gone.parquet")))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_missing_column_names_file_and_key(tmp_path, suffix):
    path = _write(tmp_path / f"p{suffix}", [{"prompt": "a", "chosen": "b"}] * 3)
    msg = _error(_cfg(path))
    assert msg.startswith(str(path)) and "no column 'rejected' (data.rejected_key)" in msg


@pytest.mark.parametrize("suffix,rows,fragment", [
    (".jsonl", [ROWS[0], ROWS[1], {**ROWS[2], "chosen": None}], "row 3, column 'chosen' (data.chosen_key): expected "
     "a string, got null"),
    (".jsonl", [ROWS[0], {**ROWS[1], "rejected": 7}, ROWS[2]], "row 2, column 'rejected' (data.rejected_key): "
     "expected a string, got int 7"),
    (".parquet", [ROWS[0], {**ROWS[1], "prompt": None}], "row 2, column 'prompt' (data.prompt_key)"),
    (".jsonl", [ROWS[0], {**ROWS[1], "m": "big"}, ROWS[2]], "row 2, column 'm' (data.margin_key): expected a finite "
     "number, got str 'big'"),
    (".parquet", [ROWS[0], {**ROWS[1], "m": None}, ROWS[2]], "row 2, column 'm' (data.margin_key)"),
])
def test_malformed_row_names_file_row_and_column(tmp_path, suffix, rows, fragment):
    path = _write(tmp_path / f"bad{suffix}", rows)
    msg = _error(_cfg(path, margin_key="m", eval_size=1))
    assert msg.startswith(f"{path}: ") and fragment in msg, msg


def test_line_that_is_not_json_names_the_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{not json\n")
    assert _error(_cfg(path)).startswith(f"{path}: row 3: not valid JSON")


def test_too_few_rows_for_the_held_out_split(tmp_path):
    path = _write(tmp_path / "few.jsonl", ROWS[:2])
    assert "data.eval_size" in _error(_cfg(path, eval_size=2))


def test_nothing_left_in_the_datasets_cache(tmp_path):
    """The dataset cache is a temporary directory: datasets' default cache gains nothing."""
    import datasets

    def files():
        root = Path(datasets.config.HF_DATASETS_CACHE)
        return sorted(root.rglob("*")) if root.exists() else []

    before = files()
    for suffix in (".jsonl", ".parquet", ".arrow"):
        load_task(_cfg(_write(tmp_path / f"p{suffix}", ROWS)))
    assert files() == before


# ---- encoding ------------------------------------------------------------------------------------
def _chat_tokenizer():
    """A real transformers fast tokenizer, one token per character, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789 <>/:|"))
    vocab = {"[pad]": 0, "[eos]": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[pad]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[pad]", eos_token="[eos]")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}{{ eos_token }}"
    return tok


def test_chat_template_renders_user_and_assistant_turns():
    tok = _chat_tokenizer()
    ids = encode_conversation(tok, "hi", "yo", max_length=100)
    assert "".join(tok.convert_ids_to_tokens(ids)) == "<user>hi<assistant>yo[eos]"
    assert encode_conversation(tok, "hi", "yo", max_length=5) == ids[-5:]  # keeps the end


def test_without_template_prompt_and_response_concatenate_with_eos():
    tok = CharTokenizer()
    ids = encode_conversation(tok, "say a:", "aab", max_length=100)
    assert ids == tok.encode("say a:aab") + [tok.eos_token_id]
    assert encode_conversation(tok, "say a:", "aab", max_length=3) == tok.encode("ab") + [tok.eos_token_id]


def test_text_outside_the_alphabet_names_the_row():
    pair = PreferencePair("q", "ok", "no!", meta={"row": 7})
    with pytest.raises(InputError, match=r"data.path: row 7: character '!'"):
        encode_pairs(CharTokenizer(), [pair], 32, "data.path")
