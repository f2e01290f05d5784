"""The README's "Your own model and data": a local Hugging Face model directory (saved by transformers
here), prompts from a jsonl file with the user's column names, and a verifier or a reward-model
directory as the reward, run with the exact command line the README shows."""

import json

import pytest

from rlinf.config import ModelConfig
from rlinf.models.reward_model import build_reward_model, save_reward_model
from rlinf.run import main

pytestmark = pytest.mark.timeout(300)

CHARS = "0123456789+= abcdefghijklmnopqrstuvwxyz?"


def _tokenizer():
    """A real PreTrainedTokenizerFast with one token per character (what a user's model directory has)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(["<pad>", "<unk>", "<eos>"] + list(CHARS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("user")
    tok = _tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         pad_token_id=0, eos_token_id=2, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(root / "my_model")
    tok.save_pretrained(root / "my_model")
    save_reward_model(build_reward_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=4), len(tok), seed=2),
                      tok, str(root / "my_reward_model"))
    rows = [{"question": f"what is {a}+{b}?", "solution": str(a + b)} for a in range(5) for b in range(4)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _command(root, out, *reward):
    # the README's command, plus the settings that keep this test small
    return ["--config", "configs/grpo_arith.yaml", f"actor.model.path={root / 'my_model'}",
            "data.task=prompts", f"data.path={root / 'prompts.jsonl'}", "data.prompt_key=question",
            "data.answer_key=solution", *reward,
            "runner.max_steps=2", "data.batch_size=2", "algorithm.group_size=2", "data.eval_size=4",
            "actor.micro_batch_size=4", "runner.plots=false", "runner.tensorboard=false",
            "runner.progress_bar=false", f"runner.output_dir={out}"]


@pytest.mark.parametrize("reward", [("reward.name=exact_match",),
                                    ("reward.type=model", "reward.model.path={root}/my_reward_model")],
                         ids=["verifier", "reward_model"])
def test_own_model_prompts_and_reward(cluster, user_files, tmp_path, reward):
    reward = [r.format(root=user_files) for r in reward]
    assert main(_command(user_files, tmp_path / "run", *reward)) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["eval"]["final"]["num_samples"] == 4  # the file's last 4 rows
    if "reward.type=model" in reward:
        assert "rm_reward" in summary["eval"]["final"]
