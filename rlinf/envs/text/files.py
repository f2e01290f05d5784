"""Prompts, preference pairs and conversations (rlinf.envs.text.conversations) from files users have:
local jsonl / parquet / arrow files.

Files are read with Hugging Face `datasets` (`load_dataset("json" | "parquet" | "arrow", data_files=...)`),
never from the hub: `HF_DATASETS_OFFLINE=1` is set and the dataset cache lives in a temporary directory
that is removed once the rows are in memory, so nothing is left under ~/.cache.

Columns come from the config: `data.prompt_key`, and for `data.task: prompts` the optional
`data.answer_key`; for `data.task: preference` `data.chosen_key`, `data.rejected_key` and the optional
`data.margin_key`; for `data.task: conversations` `data.messages_key` (rlinf.envs.text.conversations).
Every text cell must be a string and every margin a finite number; a missing file,
a missing column or a malformed row is an `InputError` naming the file, the row (1-based, in file
order) and the column, so `python -m rlinf.run` reports it in one line before anything starts
(rlinf.preflight calls `load_file_task`).

Held-out split: the rows of `data.eval_path` when set, else the last `data.eval_size` rows of
`data.path` (the file's order, no shuffling: the user decides what is held out). File tasks use every
remaining row for training (`data.train_size` bounds procedural tasks only).

Text of a (prompt, response): the tokenizer's chat template when it has one (the prompt as the user
message, the response as the assistant message), else prompt + response concatenated followed by the
end-of-sequence token; see `rlinf.models.tokenizer.conversation_ids`.
"""

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from rlinf.config.schema import DataConfig
from rlinf.envs.text.tasks import PreferencePair, TaskSplit, TextSample
from rlinf.errors import InputError
from rlinf.models.tokenizer import conversation_ids

logger = logging.getLogger(__name__)

# file suffix -> datasets' packaged builder
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}


def _describe(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _json_rows(path: Path) -> Dict[str, list]:
    """{column: values} of a jsonl file read line by line (blank lines skipped; a key a row lacks is
    None): the fallback when pyarrow's reader refuses a file, so that the row at fault is named.
    A line that is not a JSON object is an InputError naming its row."""
    rows = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"row {len(rows) + 1}: not valid JSON ({e.msg} at column {e.colno})",
                                 key=str(path)) from None
            if not isinstance(value, dict):
                raise InputError(f"row {len(rows) + 1}: expected a JSON object, got {type(value).__name__}",
                                 key=str(path))
            rows.append(value)
    columns = sorted({k for row in rows for k in row})
    return {c: [row.get(c) for row in rows] for c in columns}


def read_table(path: str, key: str) -> Dict[str, list]:
    """{column: values} of a local jsonl / parquet / arrow file; `key` names the config key that gave
    the path (used when the file is missing or of an unknown format)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"data file not found: {path}", key=key)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown file format '{p.suffix}' (use {', '.join(sorted(FORMATS))})", key=key)
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # local files only: datasets must not reach the hub
    import datasets
    from datasets.exceptions import DatasetGenerationError

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a refused file is reported as InputError
    with tempfile.TemporaryDirectory(prefix="rlinf-datasets-") as cache:
        try:
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train", cache_dir=cache)
        except (DatasetGenerationError, ValueError, TypeError, OSError) as e:
            if fmt == "json":  # blank lines or mixed cell types: read it plainly, the checks name the row
                logger.info("%s: datasets could not read it (%s); reading it line by line", p, e)
                return _json_rows(p)
            cause = e.__cause__ or e
            raise InputError(f"cannot read as {fmt}: {type(cause).__name__}: {str(cause)[:200]}", key=str(p)) from None
        return ds.to_dict()  # in memory before the cache directory goes


def _column(table: Dict[str, list], path: str, column: str, key: str, kind: str) -> list:
    """The values of `column`, each checked: kind 'text' -> str, 'number' -> finite int / float."""
    if column not in table:
        raise InputError(f"no column '{column}' ({key}); the file has columns {sorted(table)}", key=path)
    values = table[column]
    for row, value in enumerate(values, 1):
        if kind == "text":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            expected = "a string" if kind == "text" else "a finite number"
            raise InputError(f"row {row}, column '{column}' ({key}): expected {expected}, got {_describe(value)}",
                             key=path)
    return values


def read_prompts(path: str, cfg: DataConfig, key: str) -> List[TextSample]:
    """`TextSample`s of a prompt file: `data.prompt_key`, and `data.answer_key` when set (else answer '')."""
    table = read_table(path, key)
    prompts = _column(table, path, cfg.prompt_key, "data.prompt_key", "text")
    answers = (_column(table, path, cfg.answer_key, "data.answer_key", "text") if cfg.answer_key is not None
               else [""] * len(prompts))
    return [TextSample(prompt=p, answer=a, meta={"row": i}) for i, (p, a) in enumerate(zip(prompts, answers), 1)]


def read_preferences(path: str, cfg: DataConfig, key: str) -> List[PreferencePair]:
    """`PreferencePair`s of a preference file (prompt, chosen, rejected and the optional margin columns)."""
    table = read_table(path, key)
    prompts = _column(table, path, cfg.prompt_key, "data.prompt_key", "text")
    chosen = _column(table, path, cfg.chosen_key, "data.chosen_key", "text")
    rejected = _column(table, path, cfg.rejected_key, "data.rejected_key", "text")
    margins = (_column(table, path, cfg.margin_key, "data.margin_key", "number") if cfg.margin_key is not None
               else [0.0] * len(prompts))
    return [PreferencePair(prompt=p, chosen=c, rejected=r, margin=float(m), meta={"row": i})
            for i, (p, c, r, m) in enumerate(zip(prompts, chosen, rejected, margins), 1)]


def load_file_task(cfg: DataConfig) -> TaskSplit:
    """`data.task` prompts, preference or conversations (rlinf.envs.text.conversations): rows of
    `data.path`, held out per the module docstring."""
    if cfg.path is None:
        raise InputError(f"data.task '{cfg.task}' reads a file: set data.path (jsonl, parquet or arrow)",
                         key="data.path")
    from rlinf.envs.text.conversations import read_conversations

    read = {"prompts": read_prompts, "preference": read_preferences, "conversations": read_conversations}[cfg.task]
    rows = read(cfg.path, cfg, "data.path")
    if cfg.eval_path is not None:
        held = read(cfg.eval_path, cfg, "data.eval_path")
        train = rows
    else:
        if len(rows) <= cfg.eval_size:
            raise InputError(f"{cfg.path} has {len(rows)} rows: holding out the last {cfg.eval_size} leaves none "
                             "to train on (lower data.eval_size or set data.eval_path)", key="data.eval_size")
        train, held = rows[:-cfg.eval_size], rows[-cfg.eval_size:]
    if not train or not held:
        which = "data.path" if not train else "data.eval_path"
        raise InputError("the file has no rows", key=which)
    logger.info("data: %d training and %d held-out %s from %s", len(train), len(held), cfg.task,
                cfg.path if cfg.eval_path is None else f"{cfg.path} / {cfg.eval_path}")
    return TaskSplit(train, held)


def encode_pairs(tok, pairs: List[PreferencePair], max_length: int, key: str) -> List[Tuple[List[int], List[int], float]]:
    """(chosen ids, rejected ids, margin) per pair; text the tokenizer cannot encode (a character outside
    a character tokenizer's alphabet) is an InputError naming the row and `key`."""
    out = []
    for i, pair in enumerate(pairs):
        try:
            out.append((conversation_ids(tok, pair.prompt, pair.chosen, max_length),
                        conversation_ids(tok, pair.prompt, pair.rejected, max_length), pair.margin))
        except ValueError as e:
            raise InputError(f"row {pair.meta.get('row', i + 1)}: {e}", key=key) from None
    return out
