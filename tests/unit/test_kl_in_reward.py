"""KL to the reference in the reward (per-token penalty) and the adaptive coefficient, hand-computed."""

import math

import pytest
import torch

from rlinf.algorithms import AdaptiveKLController, compute_advantages, kl_penalized_token_rewards


def test_penalty_on_every_valid_token_and_score_at_the_last():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    scores = torch.tensor([1.0, 0.0])
    rewards, kl_seq = kl_penalized_token_rewards(scores, logp, ref, mask, coef=0.1, name="k1")
    # k1 = logp - ref: row 0 -> [0.5, -1.0, 0.0]; row 1 -> [1.0, 0.0, (masked)]
    expected = torch.tensor([[-0.05, 0.1, 1.0], [-0.1, 0.0, 0.0]])
    assert torch.allclose(rewards, expected)
    assert torch.allclose(kl_seq, torch.tensor([-0.5, 1.0]))


def test_sequence_estimators_see_score_minus_coef_times_kl():
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    ref = torch.tensor([[-1.0, -3.0], [-1.0, -1.0]])  # row 0: KL_seq = 2 (k1)
    mask = torch.ones(2, 2)
    rewards, _ = kl_penalized_token_rewards(torch.tensor([1.0, 1.0]), logp, ref, mask, coef=0.25, name="k1")
    adv, _ = compute_advantages("drgrpo", mask=mask, token_rewards=rewards, group_index=torch.tensor([0, 0]))
    # sequence rewards 1 - 0.5 = 0.5 and 1.0; Dr.GRPO: minus the group mean 0.75
    assert torch.allclose(adv[:, 0], torch.tensor([-0.25, 0.25]))


def test_adaptive_coefficient_follows_ziegler_and_is_clipped():
    ctl = AdaptiveKLController(0.1, target=2.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error 0.5 clipped to 0.2
    c = ctl.coef
    assert ctl.update(1.8, 10) == pytest.approx(c * (1 - 0.1 * 10 / 100))  # error 1.8/2 - 1 = -0.1
    fixed = AdaptiveKLController(0.3)
    assert fixed.update(100.0, 1000) == 0.3
    restored = AdaptiveKLController(0.1, 2.0, 100)
    restored.load(ctl.state())
    assert math.isclose(restored.coef, ctl.coef)
