"""Test helpers: tiny reward models saved the way rlinf saves them, and the reference scoring the tests
compare against (transformers' own forward, one unpadded sequence at a time)."""

from typing import List, Sequence

import torch

from rlinf.config.schema import ModelConfig
from rlinf.models.reward_model import build_reward_model, save_reward_model
from rlinf.models.tokenizer import CharTokenizer

ARITH_CHARS = "0123456789+="


def save_char_reward_model(path, chars: str = ARITH_CHARS, seed: int = 0, hidden: int = 32, layers: int = 1) -> str:
    """A random tiny Qwen2 reward model with the char tokenizer over `chars`, saved into `path`. Its score
    head is scaled up so scores differ visibly between texts (a fresh head gives values near 0)."""
    tok = CharTokenizer(chars)
    model = build_reward_model(ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=2), len(tok), seed=seed)
    with torch.no_grad():
        model.score.weight.mul_(50.0)
    save_reward_model(model, tok, str(path))
    return str(path)


@torch.no_grad()
def hf_scores(path: str, seqs: Sequence[List[int]]) -> List[float]:
    """AutoModelForSequenceClassification.from_pretrained(path) on each id sequence alone (no padding)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    return [float(model(input_ids=torch.tensor([s])).logits[0, 0]) for s in seqs]
