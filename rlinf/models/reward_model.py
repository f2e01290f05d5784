"""Reward models: Hugging Face sequence-classification LMs with one label (the scalar reward).

A reward-model directory is what `save_pretrained` writes for `AutoModelForSequenceClassification`
with `num_labels=1`, plus its tokenizer: rlinf's reward_model workflow writes one, TRL's
`RewardTrainer` writes one, and `load_reward_model` reads either. The score of a text is the head's
output at the last non-padding token (transformers' own pooling, from `config.pad_token_id`).
"""

import json
from pathlib import Path
from typing import Optional, Tuple

import torch

from rlinf.config.schema import ModelConfig
from rlinf.errors import InputError
from rlinf.models.causal_lm import _DTYPES, local_model_dir, tiny_qwen2_config

# What a one-label classification head is named in the config's architectures list.
_HEAD_SUFFIX = "ForSequenceClassification"


def build_reward_model(cfg: ModelConfig, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A one-label sequence classifier: from `cfg.path` (a causal LM or classifier directory; its
    transformer is kept and a fresh seeded score head added when it has none) or a tiny Qwen2 built
    from `cfg`, seeded by `seed` (the same trunk `build_causal_lm` builds for that seed)."""
    from transformers import AutoModelForSequenceClassification, Qwen2ForSequenceClassification

    dtype = _DTYPES[cfg.dtype]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if cfg.path is not None:
            model = AutoModelForSequenceClassification.from_pretrained(local_model_dir(cfg), num_labels=1, dtype=dtype,
                                                                       local_files_only=True)
        else:
            config = tiny_qwen2_config(cfg, vocab_size, max_position_embeddings=1024, num_labels=1)
            model = Qwen2ForSequenceClassification(config).to(dtype)
    if model.config.pad_token_id is None:  # transformers pools at the last non-pad token: it must know pad
        model.config.pad_token_id = model.config.eos_token_id
    return model


def reward_model_problem(path: Optional[str]) -> Optional[str]:
    """Why `path` is not a reward-model directory (None when it is): it must exist and its config.json
    must name a ...ForSequenceClassification architecture with exactly one label."""
    if path is None:
        return "is not set (reward.type=model needs a sequence-classification model directory)"
    p = Path(path)
    if not (p / "config.json").is_file():
        return f"{path} has no config.json (expected a Hugging Face model saved with save_pretrained)"
    config = json.loads((p / "config.json").read_text())
    archs = config.get("architectures") or []
    if not any(a.endswith(_HEAD_SUFFIX) for a in archs):
        return (f"{path} is not a sequence-classification model (architectures {archs}); a reward model has a "
                "one-label classification head")
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    if labels != 1:
        return f"{path} has a classification head with {labels} labels; a reward model has one"
    return None


def load_reward_model(path: str, dtype: str = "float32") -> Tuple[torch.nn.Module, object]:
    """(model in eval mode, tokenizer) from a reward-model directory; bad directory -> InputError naming
    reward.model.path."""
    problem = reward_model_problem(path)
    if problem is not None:
        raise InputError(problem, key="reward.model.path")
    from transformers import AutoModelForSequenceClassification

    from rlinf.models.tokenizer import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=_DTYPES[dtype], local_files_only=True)
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval().requires_grad_(False), tokenizer


def save_reward_model(model: torch.nn.Module, tokenizer, path: str) -> None:
    """`save_pretrained` of the model (safetensors) and its tokenizer into `path`."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
