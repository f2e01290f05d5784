"""Multi-turn token bookkeeping on hand-built trajectories: exact layout, masks, log-prob positions,
token rewards, advantages of the registry estimators (hand-computed), and no gradient at tool tokens."""

import pytest
import torch

from rlinf.algorithms import compute_policy_loss, logprobs_from_logits
from rlinf.envs.agent.trajectory import Segment, Trajectory
from rlinf.workflows.multiturn import BATCH_KEYS, build_multiturn_rows, multiturn_advantages

PAD = 0


def close(tensor, expected, atol=1e-6):
    torch.testing.assert_close(tensor, torch.tensor(expected, dtype=tensor.dtype), atol=atol, rtol=0)


def two_trajectories():
    """A: prompt [11, 12]; model [21, 22] (per-turn reward -0.5); tool [31, 32, 33]; model [23]; outcome 1.
    B: prompt [13]; model [24, 25, 26]; outcome 0. Same prompt group."""
    a = Trajectory([11, 12], [Segment.model([21, 22], [-0.1, -0.2], reward=-0.5), Segment.env([31, 32, 33]),
                              Segment.model([23], [-0.3])], reward=1.0, group_index=0)
    b = Trajectory([13], [Segment.model([24, 25, 26], [-0.4, -0.5, -0.6])], reward=0.0, group_index=0)
    return [a, b]


def test_layout_masks_and_logprob_positions():
    rows = build_multiturn_rows(two_trajectories(), PAD)
    batch = rows.batch
    assert tuple(batch) == BATCH_KEYS
    assert batch["input_ids"].tolist() == [[11, 12, 21, 22, 31, 32, 33, 23],
                                           [PAD, 13, 24, 25, 26, PAD, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1] * 8, [0, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 1, 2, 3, 3, 3, 3]]
    assert batch["response_mask"].tolist() == [[1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0]]
    close(batch["behaviour_logprobs"], [[-0.1, -0.2, 0, 0, 0, -0.3],
                                                                  [-0.4, -0.5, -0.6, 0, 0, 0]])
    assert batch["response_mask"].dtype == torch.float32


def test_token_rewards_and_scores():
    rows = build_multiturn_rows(two_trajectories(), PAD)
    # per-turn -0.5 at the last token of turn 1 (column 1), outcome 1.0 at the last model token (column 5)
    assert rows.token_rewards.tolist() == [[0, -0.5, 0, 0, 0, 1.0], [0, 0, 0.0, 0, 0, 0]]
    assert rows.scores.tolist() == [0.5, 0.0]
    assert rows.group_index.tolist() == [0, 0]


def test_outcome_and_turn_reward_add_on_the_same_last_token():
    t = Trajectory([1], [Segment.env([7]), Segment.model([2, 3], [-1.0, -1.0], reward=-0.25), Segment.env([8])],
                   reward=2.0)
    rows = build_multiturn_rows([t], PAD)
    assert rows.token_rewards.tolist() == [[0, 0, 1.75, 0]]
    assert rows.batch["response_mask"].tolist() == [[0, 1, 1, 0]]


def test_grpo_and_rloo_compare_sequence_sums():
    rows = build_multiturn_rows(two_trajectories(), PAD)
    adv, _ = multiturn_advantages(rows, "grpo")
    # scores [0.5, 0]: mean 0.25, unbiased std sqrt(2 * 0.25^2) = 0.353553; A = +-0.25 / (0.353553 + 1e-6)
    a = 0.25 / (0.125 ** 0.5 + 1e-6)
    close(adv, [[a, a, 0, 0, 0, a], [-a, -a, -a, 0, 0, 0]])
    adv, _ = multiturn_advantages(rows, "rloo")
    close(adv, [[0.5, 0.5, 0, 0, 0, 0.5], [-0.5, -0.5, -0.5, 0, 0, 0]])


def test_gae_skips_tool_tokens():
    rows = build_multiturn_rows(two_trajectories(), PAD)
    # critic values at tool columns (9.0) must never enter: the next step of column 1 is column 5
    values = torch.tensor([[0.1, 0.2, 9.0, 9.0, 9.0, 0.3], [0.0] * 6])
    adv, ret = multiturn_advantages(rows, "gae", values=values, gamma=1.0, lam=1.0)
    # A5 = 1 - 0.3 = 0.7; A1 = (-0.5 + 0.3 - 0.2) + 0.7 = 0.3; A0 = (0 + 0.2 - 0.1) + 0.3 = 0.4
    close(adv, [[0.4, 0.3, 0, 0, 0, 0.7], [0] * 6])
    close(ret, [[0.5, 0.5, 0, 0, 0, 1.0], [0] * 6])
    # gamma 0.5 discounts per MODEL token: G5 = 1, G1 = -0.5 + 0.5 * 1 = 0, G0 = 0 + 0.5 * 0 = 0; A = G - V
    adv, ret = multiturn_advantages(rows, "gae", values=values, gamma=0.5, lam=1.0)
    close(ret, [[0, 0, 0, 0, 0, 1.0], [0] * 6])
    close(adv, [[-0.1, -0.2, 0, 0, 0, 0.7], [0] * 6])


def test_policy_loss_gradient_is_exactly_zero_at_tool_tokens():
    rows = build_multiturn_rows(two_trajectories(), PAD)
    mask = rows.batch["response_mask"]
    T = mask.shape[1]
    torch.manual_seed(0)
    logits = torch.randn(2, T, 40, requires_grad=True)
    tokens = rows.batch["input_ids"][:, -T:]
    logp = logprobs_from_logits(logits, tokens)
    advantages = torch.ones(2, T)  # nonzero everywhere: only the mask may keep tool tokens out
    loss, _ = compute_policy_loss("ppo", logp, rows.batch["behaviour_logprobs"], advantages, mask)
    loss.backward()
    grad_norm = logits.grad.abs().sum(-1)
    assert torch.equal(grad_norm[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert bool((grad_norm[mask == 1] > 0).all())


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="one log-prob per token"):
        Segment.model([1, 2], [-0.1])
    with pytest.raises(ValueError, match="not to an env segment"):
        Segment(token_ids=[1], is_model=False, reward=1.0)
    with pytest.raises(ValueError, match="no model token"):
        build_multiturn_rows([Trajectory([1], [Segment.env([2])], reward=1.0)], PAD)
