"""Advantage estimators, masked helpers, dynamic sampling and the registry, on hand-computed cases."""

import math

import pytest
import torch

from rlinf.algorithms import (
    ADV_ESTIMATORS,
    AdvantageInputs,
    Registry,
    compute_advantages,
    drgrpo,
    dynamic_sampling_mask,
    gae,
    grpo,
    masked_mean,
    masked_whiten,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    rloo,
    scores_to_token_rewards,
)
from rlinf.errors import ConfigError


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_gae_three_steps_gamma_lam_half():
    # gamma = lam = 0.5, r = [0, 0, 1], V = [1, 2, 4], all valid (V after the end = 0):
    # delta_2 = 1 + 0.5*0 - 4 = -3      A_2 = -3
    # delta_1 = 0 + 0.5*4 - 2 = 0       A_1 = 0 + 0.25*(-3) = -0.75
    # delta_0 = 0 + 0.5*2 - 1 = 0       A_0 = 0 + 0.25*(-0.75) = -0.1875
    # returns = A + V = [0.8125, 1.25, 1]
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[1.0, 2.0, 4.0]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=0.5, lam=0.5)
    assert close(adv, [[-0.1875, -0.75, -3.0]])
    assert close(ret, [[0.8125, 1.25, 1.0]])


def test_gae_padding_and_skipped_tokens():
    # Row 0, mask [1,1,0]: the padded step is ignored (its r=9, V=5 never enter).
    #   delta_1 = 1 + 0.5*0 - 1 = 0, A_1 = 0;  delta_0 = 0 + 0.5*1 - 1 = -0.5, A_0 = -0.5 + 0.25*0
    # Row 1, mask [1,0,1] (a multi-turn gap): step 1 is skipped, step 0 bootstraps from step 2.
    #   delta_2 = 1 - 2 = -1, A_2 = -1;  delta_0 = 0 + 0.5*2 - 1 = 0, A_0 = 0 + 0.25*(-1) = -0.25
    r = torch.tensor([[0.0, 1.0, 9.0], [0.0, 7.0, 1.0]])
    v = torch.tensor([[1.0, 1.0, 5.0], [1.0, 9.0, 2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    adv, ret = gae(r, v, mask, gamma=0.5, lam=0.5)
    assert close(adv, [[-0.5, 0.0, 0.0], [-0.25, 0.0, -1.0]])
    assert close(ret, [[0.5, 1.0, 0.0], [0.75, 0.0, 1.0]])


def test_gae_dones_and_bootstrap():
    # r = [1, 0, 1], V = [1, 1, 1], done after step 1, gamma = lam = 0.5:
    # delta_2 = 1 - 1 = 0, A_2 = 0;  delta_1 = 0 + 0 (done) - 1 = -1, A_1 = -1 (no carry)
    # delta_0 = 1 + 0.5*1 - 1 = 0.5, A_0 = 0.5 + 0.25*(-1) = 0.25
    r = torch.tensor([[1.0, 0.0, 1.0]])
    v = torch.ones(1, 3)
    adv, _ = gae(r, v, torch.ones(1, 3), 0.5, 0.5, dones=torch.tensor([[0.0, 1.0, 0.0]]))
    assert close(adv, [[0.25, -1.0, 0.0]])
    # Truncated rollout: one step, r = 0, V = 1, bootstrap V_next = 4: delta = 0 + 0.5*4 - 1 = 1
    adv, ret = gae(torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.5, 0.5, bootstrap_values=torch.tensor([4.0]))
    assert close(adv, [[1.0]]) and close(ret, [[2.0]])


def test_gae_gamma_lam_one_is_return_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(3, 5), torch.randn(3, 5)
    adv, _ = gae(r, v, torch.ones(3, 5), 1.0, 1.0)
    togo = r.flip(1).cumsum(1).flip(1)
    assert close(adv, togo - v)


def test_grpo_unbiased_std_and_singleton_group():
    # group 7: [1, 0, 0, 1], mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735
    # A = +-0.5 / 0.57735 = +-0.866025;   group 3: a single sample -> 0
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0])
    gidx = torch.tensor([7, 7, 7, 7, 3])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1]])
    adv, ret = grpo(scores, gidx, mask)
    a = 0.5 / math.sqrt(1 / 3)
    assert close(adv, [[a, a], [-a, 0], [-a, -a], [a, a], [0, 0]])
    assert close(ret, adv)


def test_drgrpo_mean_centred_only():
    # [1, 0, 0, 1] - 0.5 = [0.5, -0.5, -0.5, 0.5]
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    gidx = torch.zeros(4, dtype=torch.long)
    adv, _ = drgrpo(scores, gidx, torch.ones(4, 1))
    assert close(adv[:, 0], [0.5, -0.5, -0.5, 0.5])
    assert close(grpo(scores, gidx, torch.ones(4, 1), norm_by_std=False)[0], adv)


def test_rloo_leave_one_out():
    # [1, 0, 0]: 1 - (0+0)/2 = 1;  0 - (1+0)/2 = -0.5 (twice);  lone sample in group 1 -> 0
    scores = torch.tensor([1.0, 0.0, 0.0, 5.0])
    adv, _ = rloo(scores, torch.tensor([0, 0, 0, 1]), torch.ones(4, 2))
    assert close(adv, [[1, 1], [-0.5, -0.5], [-0.5, -0.5], [0, 0]])


def test_reinforce_plus_plus_discount_then_whiten():
    # gamma = 0.5, r = [[0, 2], [1, 5]], mask [[1,1],[1,0]]:
    # G = [[0 + 0.5*2, 2], [1, -]] = [[1, 2], [1, 0]]; valid G = {1, 2, 1}
    # mean 4/3, unbiased var = ((1/3)^2 + (2/3)^2 + (1/3)^2) / 2 = 1/3
    # A = (G - 4/3) / sqrt(1/3) -> 1: -0.57735, 2: +1.1547
    r = torch.tensor([[0.0, 2.0], [1.0, 5.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv, ret = reinforce_plus_plus(r, mask, gamma=0.5)
    assert close(ret, [[1, 2], [1, 0]])
    s = math.sqrt(1 / 3)
    assert close(adv, [[-1 / 3 / s, 2 / 3 / s], [-1 / 3 / s, 0]], tol=1e-4)


def test_reinforce_plus_plus_baseline():
    # scores [1, 0 | 3, 3]: group means 0.5, 3 -> centred [0.5, -0.5, 0, 0]
    # broadcast with mask [[1,1],[1,0],[1,0],[0,0]] -> valid values {0.5, 0.5, -0.5, 0}
    # mean 0.125, unbiased var = (0.375^2*2 + 0.625^2 + 0.125^2) / 3 = 0.6875 / 3
    scores = torch.tensor([1.0, 0.0, 3.0, 3.0])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 0]])
    adv, ret = reinforce_plus_plus_baseline(scores, torch.tensor([0, 0, 1, 1]), mask)
    assert close(ret, [[0.5, 0.5], [-0.5, 0], [0, 0], [0, 0]])
    s = math.sqrt(0.6875 / 3)
    assert close(adv, [[0.375 / s, 0.375 / s], [-0.625 / s, 0], [-0.125 / s, 0], [0, 0]], tol=1e-4)


def test_scores_to_token_rewards_last_valid_token():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1]])
    out = scores_to_token_rewards(torch.tensor([3.0, 5.0, 7.0]), mask)
    assert close(out, [[0, 3, 0], [0, 0, 0], [0, 0, 7]])


def test_masked_helpers():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert close(masked_mean(x, m), 3.0)  # (1 + 2 + 3 + 6) / 4
    assert close(masked_mean(x, m, dim=1), [1.5, 4.5])
    w = masked_whiten(x, m)
    assert close(masked_mean(w, m), 0.0)
    # unbiased var of {1,2,3,6} = (4 + 1 + 0 + 9) / 3; whitened values have unit unbiased variance
    assert close(w[0, 0], (1 - 3) / math.sqrt(14 / 3), tol=1e-4)
    assert close(masked_mean(torch.zeros(2, 2), torch.zeros(2, 2)), 0.0)


def test_compute_advantages_dispatch_and_scores_placement():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    gidx = torch.zeros(4, dtype=torch.long)
    mask = torch.ones(4, 2)
    assert close(compute_advantages("grpo", scores=scores, group_index=gidx, mask=mask)[0], grpo(scores, gidx, mask)[0])
    inp = AdvantageInputs(mask=mask, scores=scores, group_index=gidx, norm_by_std=False)
    assert close(compute_advantages("grpo", inp)[0], drgrpo(scores, gidx, mask)[0])
    # GAE from outcome scores: the score lands on the last valid token.
    v = torch.zeros(1, 2)
    adv, _ = compute_advantages("gae", scores=torch.tensor([2.0]), values=v, mask=torch.ones(1, 2), gamma=0.5, lam=1.0)
    assert close(adv, [[1.0, 2.0]])  # A_1 = 2, A_0 = 0 + 0.5*2
    with pytest.raises(ValueError, match="values"):
        compute_advantages("gae", scores=torch.tensor([2.0]), mask=torch.ones(1, 2))
    for name in ADV_ESTIMATORS.names():
        a, r = compute_advantages(name, scores=scores, group_index=gidx, mask=mask, values=torch.zeros(4, 2))
        assert a.shape == r.shape == (4, 2) and torch.isfinite(a).all()


def test_unknown_estimator_names_key_and_suggestion():
    with pytest.raises(ConfigError) as e:
        compute_advantages("grpoo", mask=torch.ones(1, 1))
    assert e.value.key == "algorithm.adv_estimator"
    assert "did you mean 'grpo'" in str(e.value) and "rloo" in str(e.value)


def test_registry_basics():
    reg = Registry("thing", key="x.y")
    reg.register("b", "bee")(len)
    assert reg.get("bee") is len and reg.names() == ["b", "bee"] and "b" in reg
    with pytest.raises(ValueError):
        reg.register("b")(len)
    with pytest.raises(ConfigError, match="x.y: unknown thing 'zzz'; known: b, bee"):
        reg.get("zzz")


def test_dynamic_sampling_mask_drops_uniform_groups():
    # group 0: [1, 1, 1] all equal -> drop; group 1: [0, 1] -> keep; group 2: single -> drop
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.5])
    gidx = torch.tensor([0, 0, 0, 5, 5, 2])
    keep = dynamic_sampling_mask(scores, gidx)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [False, False, False, True, True, False]
    assert not dynamic_sampling_mask(torch.tensor([1.0, 1.0 + 1e-9]), torch.tensor([0, 0]), atol=1e-6).any()
