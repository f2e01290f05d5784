"""Causal LMs: any HF model from a local directory, or a tiny Qwen2 built from `ModelConfig`."""

import logging
from pathlib import Path

import torch

from rlinf.config.schema import ModelConfig
from rlinf.errors import InputError
from rlinf.models.gguf import resolve_model_path

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def local_model_dir(cfg: ModelConfig) -> str:
    """`cfg.path` as a local directory (`pypi:<package>` converted first, see `rlinf.models.gguf`);
    InputError naming actor.model.path when there is none."""
    path = resolve_model_path(cfg.path)
    if not Path(path).is_dir():
        raise InputError("model directory not found", key="actor.model.path")
    return path


def tiny_qwen2_config(cfg: ModelConfig, vocab_size: int, **extra):
    """The Qwen2 config of a model built from `cfg` (hidden size, layers, heads; ids 0-2 pad, bos, eos)."""
    from transformers import Qwen2Config

    if cfg.hidden_size % cfg.num_heads:
        raise InputError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}",
                         key="actor.model.num_heads")
    fields = dict(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
                  num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                  num_key_value_heads=cfg.num_heads, max_position_embeddings=256,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Qwen2Config(**{**fields, **extra})


def build_causal_lm(cfg: ModelConfig, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A model from `cfg.path` (local HF directory, or `pypi:<package>`: see `rlinf.models.gguf`), or a
    tiny Qwen2 with `vocab_size` tokens seeded by `seed`."""
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    dtype = _DTYPES[cfg.dtype]
    if cfg.path is not None:
        model = AutoModelForCausalLM.from_pretrained(local_model_dir(cfg), dtype=dtype, local_files_only=True)
    else:
        config = tiny_qwen2_config(cfg, vocab_size, tie_word_embeddings=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = Qwen2ForCausalLM(config).to(dtype)
    model.config.use_cache = True
    return model


def meta_causal_lm(cfg: ModelConfig, vocab_size: int) -> torch.nn.Module:
    """The model `build_causal_lm` makes, on the meta device (names, shapes and dtypes; no weights read or
    allocated): what a checkpoint's layout is compared with before anything loads."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.path is None:
        with torch.device("meta"):
            return build_causal_lm(cfg, vocab_size)
    config = AutoConfig.from_pretrained(local_model_dir(cfg), local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=_DTYPES[cfg.dtype])


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
