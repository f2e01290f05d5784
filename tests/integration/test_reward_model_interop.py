"""Reward models cross the rlinf / Hugging Face boundary both ways:

(a) a tiny reward model trained by TRL's `RewardTrainer` (2 steps) loads in rlinf's RewardModelWorker, whose
    scores equal `AutoModelForSequenceClassification`'s forward on the text TRL trains on (prompt +
    response + EOS), and, once the tokenizer has a chat template, on the templated conversation;
(b) a reward model saved by rlinf (`build_reward_model` + `save_reward_model`, char tokenizer) loads with
    `AutoModelForSequenceClassification.from_pretrained` and scores as the RewardModelWorker does.
"""

import pytest
import torch

from rlinf.config.schema import RewardConfig, RewardModelConfig
from rlinf.models.tokenizer import CharTokenizer
from rlinf.workers.reward.model_worker import RewardModelWorker
from tests.rm_helpers import ARITH_CHARS, hf_scores, save_char_reward_model

pytestmark = pytest.mark.timeout(120)

CHARS = "0123456789+= abcdefghijklmnopqrstuvwxyz"
ITEMS = [("12+7=", "19", None), ("sum of 3 and 4 is ", "7", None), ("20+20=", "41", None), ("1+1=", "", None)]
CHAT = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")


def _char_tokenizer_fast():
    """A real `PreTrainedTokenizerFast`: one token per character (a WordLevel model over single chars)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(["<pad>", "<unk>", "<eos>"] + list(CHARS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def _worker(path: str, micro_batch_size: int = 3) -> RewardModelWorker:
    return RewardModelWorker(RewardConfig(type="model", model=RewardModelConfig(path=path,
                                                                                micro_batch_size=micro_batch_size)))


@pytest.fixture(scope="module")
def trl_dir(tmp_path_factory):
    """TRL RewardTrainer, 2 steps on 4 preference pairs; the tiny Qwen2 classifier and tokenizer saved."""
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForSequenceClassification
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    out = tmp_path_factory.mktemp("trl") / "rm"
    tok = _char_tokenizer_fast()
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    initial_head = model.score.weight.detach().clone()
    pairs = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
             for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]
    args = TRLRewardConfig(output_dir=str(out / "trainer"), max_steps=2, per_device_train_batch_size=2,
                           learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no",
                           dataloader_num_workers=0, disable_tqdm=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok)
    assert trainer.train().global_step == 2
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    return str(out), initial_head


def test_trl_reward_model_scores_in_rlinf(trl_dir):
    from transformers import AutoModelForSequenceClassification

    path, initial_head = trl_dir
    saved = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    assert not torch.allclose(saved.score.weight, initial_head)  # the trainer changed the weights
    worker = _worker(path)
    tok = _char_tokenizer_fast()  # the tokenizer TRL trained with (transformers 5's AutoTokenizer would
    # load it as a Qwen2Tokenizer, which splits "sum of" differently: see rlinf.models.tokenizer.tokenizer_as_saved)
    # TRL's text for non-conversational pairs: prompt + response + eos, tokenized with the tokenizer's defaults
    want = hf_scores(path, [tok(p + r + tok.eos_token)["input_ids"] for p, r, _ in ITEMS])
    assert worker.score(ITEMS) == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 1e-3


def test_trl_reward_model_with_chat_template(trl_dir, tmp_path):
    import shutil

    path = str(tmp_path / "chat_rm")
    shutil.copytree(trl_dir[0], path)
    tok = _char_tokenizer_fast()
    tok.chat_template = CHAT
    tok.save_pretrained(path)
    worker = _worker(path, micro_batch_size=2)
    seqs = []
    for p, r, _ in ITEMS:
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                       tokenize=False)
        assert text == f"user: {p}\nassistant: {r}\n"
        seqs.append(tok(text)["input_ids"])
    assert worker.score(ITEMS) == pytest.approx(hf_scores(path, seqs), abs=1e-5)


def test_rlinf_reward_model_loads_in_transformers(tmp_path):
    import json

    from transformers import AutoModelForSequenceClassification

    path = save_char_reward_model(tmp_path / "rm", chars=ARITH_CHARS, seed=5)
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and config["pad_token_id"] == 0
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    assert model.num_labels == 1
    tok = CharTokenizer(ARITH_CHARS)
    items = [("12+7=", "91", "91"), ("3+4=", "7", "7"), ("29+29=", "85", "85")]
    want = hf_scores(path, [tok.encode(p + r) + [tok.eos_token_id] for p, r, _ in items])
    assert _worker(path, micro_batch_size=2).score(items) == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 1e-3
