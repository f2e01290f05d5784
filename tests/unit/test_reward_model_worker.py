"""RewardModelWorker in-process (no Ray): scores against transformers' own forward, truncation, weighted
verifiers, running normalisation (with its checkpoint), and bad reward.weights; RewardWorker's triples."""

import math

import pytest
import torch

from rlinf.config.schema import RewardConfig, RewardModelConfig
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer
from rlinf.workers.reward import RewardWorker, reward_worker_class
from rlinf.models.tokenizer import conversation_ids as reward_model_ids
from rlinf.workers.reward.model_worker import RewardModelWorker, RunningNorm, pad_right
from tests.rm_helpers import ARITH_CHARS, hf_scores, save_char_reward_model

ITEMS = [("12+7=", "91", "91"), ("3+4=", "7", "7"), ("20+20=", "04", "40"), ("1+1=", "", "2"),
         ("29+29=", "88", "85")]


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    return save_char_reward_model(tmp_path_factory.mktemp("rm") / "rm")


def _worker(path, **model_kw) -> RewardModelWorker:
    weights = model_kw.pop("weights", {})
    return RewardModelWorker(RewardConfig(type="model", model=RewardModelConfig(path=path, **model_kw),
                                          weights=weights))


def _expected_raw(path, items, max_length=512):
    tok = CharTokenizer(ARITH_CHARS)
    seqs = [(tok.encode(p + r) + [tok.eos_token_id])[-max_length:] for p, r, _ in items]
    return hf_scores(path, seqs)


def test_scores_equal_unpadded_transformers_forward(rm_path):
    """Micro-batches of 2 over texts of different lengths (right padding) give the same scores as one
    unpadded forward per text; the input is prompt + response + EOS (char tokenizer: no chat template)."""
    worker = _worker(rm_path, micro_batch_size=2)
    got = worker.score(ITEMS)
    want = _expected_raw(rm_path, ITEMS)
    assert got == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 1e-2  # the texts score differently: the comparison can fail


def test_long_sequences_keep_the_end(rm_path):
    worker = _worker(rm_path, max_length=8)
    items = [("12+7=12+7=12+7=", "91", "91")]
    ids = reward_model_ids(worker.tokenizer, "12+7=12+7=12+7=", "91", 8)
    assert ids == CharTokenizer(ARITH_CHARS).encode("12+7=91")[-7:] + [2] and len(ids) == 8
    assert worker.score(items) == pytest.approx(_expected_raw(rm_path, items, max_length=8), abs=1e-5)


def test_text_outside_a_char_alphabet_is_input_error(rm_path):
    with pytest.raises(InputError, match="cannot encode") as e:
        _worker(rm_path).score([("1+1=", "two", "2")])
    assert e.value.key == "reward.model.path"


def test_pad_right_masks_the_tail():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_weighted_sum_with_verifiers(rm_path):
    raw = _expected_raw(rm_path, ITEMS)
    worker = _worker(rm_path, weights={"model": 0.5, "exact_match": 2.0, "digits": -1.0})
    exact = [1.0, 1.0, 0.0, 0.0, 0.0]
    digits = [1.0, 1.0, 0.0, 0.0, 0.25]  # "04" vs "40": no position right; "88" vs "85": one of two
    want = [0.5 * m + 2.0 * e - 1.0 * d for m, e, d in zip(raw, exact, digits)]
    assert worker.score(ITEMS) == pytest.approx(want, abs=1e-5)
    only_rule = _worker(rm_path, weights={"exact_match": 1.0})
    assert only_rule.score(ITEMS) == exact


def test_unknown_weight_name_is_input_error(rm_path):
    with pytest.raises(InputError) as e:
        _worker(rm_path, weights={"model": 1.0, "exact": 1.0})
    assert e.value.key == "reward.weights" and "exact" in str(e.value)


def test_verifier_without_answers_is_input_error(rm_path):
    worker = _worker(rm_path, weights={"model": 1.0, "exact_match": 1.0})
    with pytest.raises(InputError, match="reference answer") as e:
        worker.score([("1+1=", "2", None)])
    assert e.value.key == "reward.weights"


def test_running_normalisation_over_all_training_scores(rm_path, tmp_path):
    raw = _expected_raw(rm_path, ITEMS)
    worker = _worker(rm_path, normalize="running")
    first = worker.score(ITEMS[:2])
    m, s = sum(raw[:2]) / 2, math.sqrt(sum((x - sum(raw[:2]) / 2) ** 2 for x in raw[:2]) / 2)
    assert first == pytest.approx([(x - m) / s for x in raw[:2]], abs=1e-5)
    # evaluation: normalised with the statistics so far, not added to them
    assert worker.score(ITEMS[2:3], update_stats=False) == pytest.approx([(raw[2] - m) / s], abs=1e-5)
    assert worker.normalizer_state()["count"] == 2
    worker.save_checkpoint(str(tmp_path / "reward"))
    second = worker.score(ITEMS[2:])
    m5 = sum(raw) / 5
    s5 = math.sqrt(sum((x - m5) ** 2 for x in raw) / 5)
    assert second == pytest.approx([(x - m5) / s5 for x in raw[2:]], abs=1e-5)
    # a resumed worker continues identically from the checkpoint
    resumed = _worker(rm_path, normalize="running")
    assert resumed.checkpoint_mismatch(str(tmp_path / "reward")) is None
    resumed.load_checkpoint(str(tmp_path / "reward"))
    assert resumed.score(ITEMS[2:]) == second
    plain = _worker(rm_path)
    assert "normaliser" in plain.checkpoint_mismatch(str(tmp_path / "reward"))
    assert "missing" in resumed.checkpoint_mismatch(str(tmp_path / "nowhere"))


def test_running_norm_merge_equals_one_pass():
    values = torch.tensor([0.3, -1.2, 4.0, 2.5, 0.0, 7.1, -3.3])
    whole, parts = RunningNorm(), RunningNorm()
    whole.merge(*RunningNorm.moments(values))
    for chunk in (values[:3], values[3:3], values[3:]):  # an empty shard (a rank with no rows) included
        parts.merge(*RunningNorm.moments(chunk))
    assert parts.count == 7 and parts.mean == pytest.approx(float(values.double().mean()), abs=1e-12)
    assert parts.std == pytest.approx(float(values.double().std(unbiased=False)), abs=1e-12)
    assert parts.m2 == pytest.approx(whole.m2, abs=1e-12)


def test_rule_worker_scores_triples():
    assert reward_worker_class(RewardConfig()) is RewardWorker
    assert reward_worker_class(RewardConfig(type="model")) is RewardModelWorker
    worker = RewardWorker(RewardConfig(name="exact_match", format_reward=0.1))
    assert worker.score([("1+1=", "2", "2"), ("1+1=", "3", "2"), ("1+1=", " ", "2")]) == [1.0, 0.1, 0.0]
