"""KL estimators k1 / k2 / k3 on a known pair, clamping and name lookup."""

import math

import pytest
import torch

from rlinf.algorithms import KL_ESTIMATORS, kl_penalty
from rlinf.errors import ConfigError


def test_estimators_on_known_pair():
    # logp = log 0.5, ref = log 0.25 -> log r = ref - logp = log 0.5 = -0.693147
    # k1 = -log r = 0.693147;  k2 = 0.5 * 0.480453 = 0.240227;  k3 = 0.5 + 0.693147 - 1 = 0.193147
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2), abs=1e-6)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2, abs=1e-6)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert kl_penalty(logp, ref).item() == kl_penalty(logp, ref, "k3").item()  # k3 is the default


def test_zero_when_equal_and_shapes():
    x = torch.randn(3, 4)
    for name in ("k1", "k2", "k3"):
        out = kl_penalty(x, x, name)
        assert out.shape == (3, 4) and torch.all(out == 0)


def test_k3_clamped():
    # log r = -100 -> clamped to -20: exp(-20) + 20 - 1 ~ 19 -> clamped to 10
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([-100.0]), "k3").item() == pytest.approx(10.0)
    assert torch.isfinite(kl_penalty(torch.tensor([-100.0]), torch.tensor([0.0]), "k3")).all()


def test_unknown_estimator():
    assert {"k1", "k2", "k3"} <= set(KL_ESTIMATORS.names())
    with pytest.raises(ConfigError) as e:
        kl_penalty(torch.zeros(1), torch.zeros(1), "k33")
    assert e.value.key == "algorithm.kl_estimator" and "did you mean 'k3'" in str(e.value)
