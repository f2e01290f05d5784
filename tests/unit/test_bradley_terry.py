"""Bradley-Terry loss on hand-computed cases."""

import math

import pytest
import torch

from rlinf.algorithms import PAIRWISE_LOSSES, bradley_terry_loss


def test_hand_computed_mean_of_neg_log_sigmoid():
    # differences 1 and -2: -log sigmoid(1) = log(1 + e^-1) = 0.31326; -log sigmoid(-2) = log(1 + e^2) = 2.12693
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 2.0]))
    assert float(loss) == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2, abs=1e-6)
    assert float(loss) == pytest.approx((0.3132617 + 2.1269280) / 2, abs=1e-6)


def test_margin_is_subtracted_from_the_difference():
    # r_c - r_r = 1, margin 1: -log sigmoid(0) = log 2; margin 3: log(1 + e^2)
    loss = bradley_terry_loss(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0]))
    assert float(loss) == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2, abs=1e-6)


def test_stable_for_large_differences_and_gradient():
    r_c = torch.tensor([200.0, -200.0], requires_grad=True)
    loss = bradley_terry_loss(r_c, torch.zeros(2))
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(100.0, abs=1e-4)  # (0 + 200) / 2
    loss.backward()
    # d/dr_c of -log sigmoid(d) / N = -(1 - sigmoid(d)) / N: 0 for d = 200, -0.5 for d = -200
    assert torch.allclose(r_c.grad, torch.tensor([0.0, -0.5]), atol=1e-6)


def test_registered():
    assert PAIRWISE_LOSSES.get("bradley_terry") is bradley_terry_loss
