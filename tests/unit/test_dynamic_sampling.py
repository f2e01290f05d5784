"""DAPO dynamic sampling refill (rlinf.workflows.dynamic_sampling) on hand-computed rounds."""

import pytest
import torch

from rlinf.workflows.dynamic_sampling import collect_dynamic

PAD = 0


def _fake_generate(round_scores, calls):
    """generate(round, count): group g of round r gets scores round_scores[r][g]; response width r + 1;
    token ids 100*(r+1) + 10*g + j identify each row."""
    def generate(round_, count):
        calls.append((round_, count))
        groups = round_scores[round_][:count]
        n = len(groups[0])
        width = round_ + 1
        rows = [(g, j) for g in range(len(groups)) for j in range(n)]
        responses = torch.tensor([[100 * (round_ + 1) + 10 * g + j] * width for g, j in rows])
        return {"responses": responses, "logprobs": -torch.ones(len(rows), width), "mask": torch.ones(len(rows), width),
                "versions": torch.full((len(rows),), 7), "scores": torch.tensor([groups[g][j] for g, j in rows]),
                "group_index": torch.tensor([g for g, _ in rows]), "prompts": [[round_, g] for g, _ in rows],
                "texts": [f"{round_}.{g}.{j}" for g, j in rows], "timing": {"rollout": 1.0, "reward": 0.5}}
    return generate


def test_refill_drops_flat_groups_asks_by_keep_rate_and_pads_after_the_last_round():
    rounds = [
        [[1, 1], [0, 1], [0, 0], [1, 0]],   # keep g1, g3 -> 2 of 4; keep rate 1/2, need 2 -> ask ceil(2 / 0.5) = 4
        [[0, 1], [1, 1], [0, 0], [0, 0]],   # keep g0 -> 3 of 8; keep rate 3/8, need 1 -> ask ceil(1 / 0.375) = 3
        [[1, 1], [0, 0], [1, 1], [0, 1]],   # (only 3 asked) none kept; 3 rounds = max -> pad 1 dropped group
    ]
    calls = []
    out = collect_dynamic(_fake_generate(rounds, calls), target_groups=4, max_rounds=3, pad_id=PAD)
    assert calls == [(0, 4), (1, 4), (2, 3)]
    # Kept in order: round 0 g1, round 0 g3, round 1 g0, then the first dropped group (round 0 g0) as padding.
    assert out["responses"][:, 0].tolist() == [110, 111, 130, 131, 200, 201, 100, 101]
    assert out["scores"].tolist() == [0, 1, 1, 0, 0, 1, 1, 1]
    assert out["group_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out["prompts"] == [[0, 1], [0, 1], [0, 3], [0, 3], [1, 0], [1, 0], [0, 0], [0, 0]]
    # Round 1 rows are 2 wide, round 0 rows padded to 2 with pad / 0 log-prob / 0 mask.
    assert out["responses"].shape == (8, 2) and out["responses"][0].tolist() == [110, PAD]
    assert out["mask"].sum(1).tolist() == [1, 1, 1, 1, 2, 2, 1, 1]
    assert out["logprobs"][0].tolist() == [-1.0, 0.0]
    assert out["dynamic_sampling"] == {"kept_groups": 3.0, "rounds": 3.0, "generated_groups": 11.0,
                                       "dropped_fraction": pytest.approx(8 / 11), "padded_groups": 1.0,
                                       "no_signal_groups": 8.0, "surplus_groups": 0.0}
    assert out["dropped"] == {"surplus_groups": 0.0}
    assert out["timing"] == {"rollout": 3.0, "reward": 1.5}


def test_a_round_with_more_signal_than_needed_contributes_only_what_is_missing():
    calls = []
    rounds = [[[0, 1], [1, 1]], [[1, 0], [0, 1]]]
    out = collect_dynamic(_fake_generate(rounds, calls), target_groups=2, max_rounds=4, pad_id=PAD)
    assert calls == [(0, 2), (1, 2)]  # keep rate 1/2, need 1 -> ask 2; both have signal, only g0 is taken
    assert out["scores"].tolist() == [0, 1, 1, 0]
    assert out["dynamic_sampling"]["rounds"] == 2.0 and out["dynamic_sampling"]["padded_groups"] == 0.0
    assert out["dynamic_sampling"]["dropped_fraction"] == pytest.approx(1 / 4)
    # round 1's g1 had a signal but was not needed: counted, not silently discarded
    assert out["dynamic_sampling"]["surplus_groups"] == 1.0 and out["dropped"] == {"surplus_groups": 1.0}


def test_refill_stops_as_soon_as_the_batch_is_full():
    calls = []
    rounds = [[[0, 0], [1, 1], [0, 1]], [[2, 0], [1, 1], [0, 1]]]
    out = collect_dynamic(_fake_generate(rounds, calls), target_groups=3, max_rounds=5, pad_id=PAD)
    # Round 0 keeps 1 of 3 (rate 1/3, need 2 -> ask min(3, ceil(2 * 3)) = 3); round 1 keeps g0 and g2.
    assert calls == [(0, 3), (1, 3)]
    assert out["scores"].tolist() == [0, 1, 2, 0, 0, 1]
    assert out["dynamic_sampling"]["kept_groups"] == 3.0 and out["dynamic_sampling"]["padded_groups"] == 0.0
    assert out["dynamic_sampling"]["dropped_fraction"] == pytest.approx(3 / 6)
    assert torch.equal(out["versions"], torch.full((6,), 7))


def test_every_generated_group_is_kept_or_counted():
    """generated == kept + surplus (signal, not needed) + no-signal, over random score patterns."""
    import random

    for seed in range(60):
        rng = random.Random(seed)
        target = rng.randint(1, 4)
        rounds = [[[rng.randint(0, 1), rng.randint(0, 1)] for _ in range(target)] for _ in range(4)]
        out = collect_dynamic(_fake_generate(rounds, []), target_groups=target, max_rounds=rng.randint(1, 4), pad_id=PAD)
        ds = out["dynamic_sampling"]
        assert ds["generated_groups"] == ds["kept_groups"] + ds["surplus_groups"] + ds["no_signal_groups"]
        assert out["dropped"]["surplus_groups"] == ds["surplus_groups"]
        assert ds["kept_groups"] + ds["padded_groups"] == int(out["group_index"].max()) + 1
