"""The synthetic preference task: gold reward on hand-checked cases, labels, noise rate, seeding, prompts;
and the reward_model workflow's config checks and placement."""

from collections import Counter

import pytest

from rlinf.config import load_config
from rlinf.config.schema import DataConfig
from rlinf.envs.text import load_task
from rlinf.envs.text.synthetic_preference import LABEL_NOISE, gold_reward, prompt_letter
from rlinf.errors import InputError
from rlinf.models.tokenizer import DEFAULT_CHARS


@pytest.mark.parametrize("prompt,response,expected", [
    ("say k:", "kkk", 3 / 8),                 # three hits, short
    ("say k:", "KaK", 2 / 8),                 # case-insensitive
    ("say q:", "kkk", 0.0),                   # prompt-conditional: the same response, another letter
    ("say k:", "kkkkkkkk", 1.0),              # eight hits, no penalty yet
    ("say k:", "kkkkkkkkkk", (10 - 1) / 8),   # ten hits, two characters past eight cost 0.5 each
    ("say a:", "b" * 12, (0 - 2) / 8),        # no hit, four extra characters
    ("say a:", "", 0.0),
])
def test_gold_reward_hand_checked(prompt, response, expected):
    assert gold_reward(prompt, response) == pytest.approx(expected)


def test_prompt_letter_rejects_other_text():
    assert prompt_letter("say z:") == "z"
    with pytest.raises(ValueError, match="not a synthetic_preference prompt"):
        gold_reward("what is 2+2", "4")


def _split(train=4000, eval_=1000, seed=1234):
    return load_task(DataConfig(task="synthetic_preference", train_size=train, eval_size=eval_, seed=seed))


def test_labels_follow_gold_with_seeded_noise_on_training_pairs_only():
    split = _split()
    assert len(split.train) == 4000 and len(split.eval) == 1000
    wrong = [p for p in split.train if gold_reward(p.prompt, p.chosen) < gold_reward(p.prompt, p.rejected)]
    assert wrong == [p for p in split.train if p.meta["flipped"]]
    assert abs(len(wrong) / 4000 - LABEL_NOISE) < 0.02  # 10 % +- 4 sigma (sigma ~ 0.005)
    assert all(gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in split.eval)  # no ties


def test_seeded_and_disjoint_eval_seed():
    a, b = _split(200, 50), _split(200, 50)
    assert a.train == b.train and a.eval == b.eval
    assert a.train[:50] != a.eval and _split(200, 50, seed=7).train != a.train


def test_every_letter_and_all_text_in_the_default_alphabet():
    split = _split(2000, 10)
    assert set(Counter(p.meta["letter"] for p in split.train)) == set("abcdefghijklmnopqrstuvwxyz")
    text = "".join(p.prompt + p.chosen + p.rejected for p in split.train)
    assert set(text) <= set(DEFAULT_CHARS)


def test_prompt_blind_rules_are_weak():
    """The decoy letter: preferring the response with the most repeated character, or the longer one,
    agrees with the gold labels far less than counting the prompt's letter does."""
    held = _split(10, 2000).eval

    def agreement(score):
        return sum(score(p.prompt, p.chosen) > score(p.prompt, p.rejected) for p in held) / len(held)

    assert agreement(lambda _p, r: max(Counter(r).values(), default=0)) < 0.7
    assert agreement(lambda _p, r: len(r)) < 0.7
    assert agreement(lambda p, r: r.count(prompt_letter(p))) > 0.85


def test_synthetic_prompts_share_the_prompt_distribution():
    split = load_task(DataConfig(task="synthetic_prompts", train_size=100, eval_size=20))
    assert len(split.train) == 100 and all(prompt_letter(s.prompt) == s.answer for s in split.train + split.eval)


# ---- the workflow's config checks (before anything starts) and placement ---------------------------
RECIPE = "configs/rm_synthetic.yaml"


@pytest.mark.parametrize("override,key", [
    ("runner.schedule=async", "runner.schedule"),
    ("algorithm.max_staleness=1", "runner.schedule"),
    ("data.task=arith", "data.task"),
    ("data.batch_size=3", "data.batch_size"),
])
def test_unsupported_combinations_are_input_errors(override, key):
    from rlinf.placement import build_placement
    from rlinf.workflows import components_for
    from rlinf.workflows.reward_model import RewardModelWorkflow

    cfg = load_config(RECIPE, ["cluster.num_devices=2", "data.train_size=100", "data.eval_size=10", override])
    placement = build_placement(cfg.cluster.component_placement, 2, 1, components_for(cfg))
    with pytest.raises(InputError) as info:
        RewardModelWorkflow(cfg, placement, phase=None)
    assert info.value.key == key


def test_placement_needs_only_the_actor():
    from rlinf.placement import build_placement
    from rlinf.workflows import components_for

    cfg = load_config(RECIPE, ["cluster.num_devices=2"])
    assert components_for(cfg) == ("actor",)
    placement = build_placement({}, 2, 1, components_for(cfg))
    assert placement.devices == {"actor": [0, 1]} and placement.mode == "single"
    with pytest.raises(InputError, match="'rollout' has no devices"):  # RL workflows still need a rollout
        build_placement({"actor": "all"}, 2, 1, ("actor", "rollout", "reward"))
