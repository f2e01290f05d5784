"""Prompts with verifiable answers, split into train and held-out eval sets.

- `arith`: "a+b=" over operands 0..`data.max_operand`, answer the integer (optionally zero-padded to
  `data.answer_width` digits and written least-significant digit first). The eval split holds out
  whole operand pairs (a deterministic ~1/5 of them), so eval accuracy measures generalisation,
  not recall of trained prompts.
- `calc`, `facts`: the calculator and retrieval agents' tasks (rlinf.envs.text.calc, rlinf.envs.text.facts).
- `jsonl`: GSM8K-format lines `{"question": ..., "answer": "... #### 42"}` from `data.path`.
- `prompts`: RL prompts from a user's jsonl / parquet / arrow file (`data.path`, column
  `data.prompt_key`, optional reference answers in `data.answer_key`); see rlinf.envs.text.files.
- `preference`: preference pairs (prompt, chosen, rejected, optional margin) from such a file, for
  reward-model training; items are `PreferencePair`s.
- `synthetic_preference`: seeded preference pairs labelled by a hidden gold scorer with label noise;
  `synthetic_prompts`: prompts of the same distribution for RL against a learned reward model
  (rlinf.envs.text.synthetic_preference, `gold_reward`).
- any reasoning-gym task name (e.g. `basic_arithmetic`, `chain_sum`): its seeded generator; the eval
  split uses a different seed.
File tasks hold out `data.eval_path` when set, else the last `data.eval_size` rows of `data.path`.
"""

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Union

from rlinf.config.schema import DataConfig
from rlinf.errors import InputError


@dataclass
class TextSample:
    prompt: str
    answer: str
    meta: dict = field(default_factory=dict)


@dataclass
class PreferencePair:
    """One human (or gold-scorer) judgement: `chosen` is preferred to `rejected` as a response to
    `prompt`; `margin` m enters the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - m)."""
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    meta: dict = field(default_factory=dict)


@dataclass
class TaskSplit:
    train: List[Union[TextSample, PreferencePair]]
    eval: List[Union[TextSample, PreferencePair]]


def _arith(cfg: DataConfig) -> TaskSplit:
    hi = cfg.max_operand
    pairs = [(a, b) for a in range(hi + 1) for b in range(hi + 1)]
    rng = random.Random(cfg.seed)
    rng.shuffle(pairs)
    n_eval = max(1, len(pairs) // 5)
    held, train_pairs = pairs[:n_eval], pairs[n_eval:]

    def sample(a, b):
        answer = str(a + b).zfill(cfg.answer_width)
        if cfg.answer_reversed:
            answer = answer[::-1]
        return TextSample(prompt=f"{a}+{b}=", answer=answer, meta={"a": a, "b": b, "sum": a + b})

    train = [sample(*train_pairs[rng.randrange(len(train_pairs))]) for _ in range(cfg.train_size)]
    eval_rng = random.Random(cfg.seed + 1)
    evals = [sample(*held[i % len(held)]) for i in range(min(cfg.eval_size, len(held)))]
    eval_rng.shuffle(evals)
    return TaskSplit(train, evals)


def _gsm8k_answer(text: str) -> str:
    return text.split("####")[-1].strip().replace(",", "") if "####" in text else text.strip()


def _jsonl(cfg: DataConfig) -> TaskSplit:
    if cfg.path is None:
        raise InputError("data.task 'jsonl' needs data.path", key="data.path")
    path = Path(cfg.path)
    if not path.is_file():
        raise InputError("dataset file not found", key=str(path))
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(TextSample(prompt=str(row["question"]), answer=_gsm8k_answer(str(row["answer"]))))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"line {lineno}: expected a JSON object with 'question' and 'answer' ({e})",
                             key=str(path)) from None
    if len(rows) < 2:
        raise InputError("need at least 2 examples (train and eval)", key=str(path))
    random.Random(cfg.seed).shuffle(rows)
    n_eval = min(cfg.eval_size, max(1, len(rows) // 5))
    return TaskSplit(rows[n_eval:][: cfg.train_size], rows[:n_eval])


def _reasoning_gym(cfg: DataConfig) -> TaskSplit:
    import reasoning_gym

    try:
        train_ds = reasoning_gym.create_dataset(cfg.task, size=cfg.train_size, seed=cfg.seed)
        eval_ds = reasoning_gym.create_dataset(cfg.task, size=cfg.eval_size, seed=cfg.seed + 1_000_003)
    except (KeyError, ValueError) as e:
        raise InputError(f"unknown task '{cfg.task}' ({e}); use 'arith', 'jsonl' or a reasoning-gym task",
                         key="data.task") from None

    def convert(ds):
        return [TextSample(prompt=x["question"], answer=str(x["answer"]), meta={"rg_task": cfg.task}) for x in ds]

    return TaskSplit(convert(train_ds), convert(eval_ds))


# Task kinds whose items are PreferencePairs (reward-model training) rather than prompts.
PREFERENCE_TASKS = ("preference", "synthetic_preference")


def load_task(cfg: DataConfig) -> TaskSplit:
    if cfg.task == "arith":
        return _arith(cfg)
    if cfg.task == "jsonl":
        return _jsonl(cfg)
    if cfg.task in ("prompts", "preference"):  # imported here: `datasets` only for file tasks
        from rlinf.envs.text.files import load_file_task

        return load_file_task(cfg)
    if cfg.task == "calc":
        from rlinf.envs.text.calc import load_calc

        return load_calc(cfg)
    if cfg.task == "facts":
        from rlinf.envs.text.facts import load_facts

        return load_facts(cfg)
    if cfg.task in ("synthetic_preference", "synthetic_prompts"):
        from rlinf.envs.text.synthetic_preference import load_synthetic

        return load_synthetic(cfg)
    return _reasoning_gym(cfg)
