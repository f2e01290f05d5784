"""critic.init_from_reward_model: the critic's initial value before response token t is the reward model's
score of the sequence up to (not including) that token; a reward model with another vocabulary is an
InputError naming the key."""

import json

import pytest
import torch

from rlinf.config.schema import AlgorithmConfig, CriticConfig
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer
from rlinf.workers.critic.fsdp_critic import CriticWorker, check_critic_init
from tests.rm_helpers import ARITH_CHARS, hf_scores, save_char_reward_model

KEY = "critic.init_from_reward_model"


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    return save_char_reward_model(tmp_path_factory.mktemp("critic_rm") / "rm", seed=3)


def _batch(tok, prompts, responses):
    """A left-padded prompt block and a right-padded response block, as build_lm_batch lays them out."""
    P, T = max(len(p) for p in prompts), max(len(r) for r in responses)
    ids = torch.zeros(len(prompts), P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    resp_mask = torch.zeros(len(prompts), T)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        p_ids, r_ids = tok.encode(p), tok.encode(r)
        ids[i, P - len(p_ids):P], ids[i, P:P + len(r_ids)] = torch.tensor(p_ids), torch.tensor(r_ids)
        mask[i, P - len(p_ids):P + len(r_ids)] = 1
        resp_mask[i, :len(r_ids)] = 1
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "response_mask": resp_mask}


def test_initial_values_are_reward_model_scores_of_prefixes(rm_path):
    tok = CharTokenizer(ARITH_CHARS)
    critic = CriticWorker(CriticConfig(enabled=True, init_from_reward_model=True, micro_batch_size=2),
                          AlgorithmConfig(), len(tok), seed=0, reward_model_path=rm_path)
    prompts, responses = ["12+7=", "3+4="], ["91", "7"]
    values = critic.compute_values(_batch(tok, prompts, responses))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        full = tok.encode(p + r)
        # value before response token t reads the position that predicts it: the prefix full[:len(p) + t]
        want = hf_scores(rm_path, [full[:len(tok.encode(p)) + t] for t in range(len(r))])
        assert values[i, :len(r)].tolist() == pytest.approx(want, abs=1e-5)
        assert torch.all(values[i, len(r):] == 0)
    assert abs(values[0, 0] - values[0, 1]) > 1e-3  # different prefixes score differently


def test_reward_model_with_other_alphabet_is_rejected(rm_path, tmp_path):
    cfg = CriticConfig(enabled=True, init_from_reward_model=True)
    check_critic_init(cfg, rm_path, CharTokenizer(ARITH_CHARS))  # same alphabet: fine
    check_critic_init(CriticConfig(enabled=True), None, CharTokenizer("ab"))  # flag off: nothing checked
    with pytest.raises(InputError, match="alphabets") as e:
        check_critic_init(cfg, rm_path, CharTokenizer("0123456789-="))  # same size, one char differs
    assert e.value.key == KEY
    with pytest.raises(InputError, match="vocabulary of 15 tokens, the policy 13") as e:
        check_critic_init(cfg, rm_path, CharTokenizer("0123456789"))
    assert e.value.key == KEY
    not_rm = tmp_path / "lm"
    not_rm.mkdir()
    (not_rm / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(InputError, match="not a sequence-classification model") as e:
        check_critic_init(cfg, str(not_rm), CharTokenizer(ARITH_CHARS))
    assert e.value.key == KEY


def test_worker_refuses_a_vocabulary_of_another_size(rm_path):
    with pytest.raises(InputError) as e:
        CriticWorker(CriticConfig(enabled=True, init_from_reward_model=True), AlgorithmConfig(), 40, seed=0,
                     reward_model_path=rm_path)
    assert e.value.key == KEY
