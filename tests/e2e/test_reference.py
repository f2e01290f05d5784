"""The reference policy as a placed, sharded group, and the KL to it in the loss or in the reward."""

import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.run import run_training
from rlinf.workflows import components_for

pytestmark = pytest.mark.timeout(300)

N_ROWS = 4 * 4  # data.batch_size x algorithm.group_size


def _run(tmp_path, *overrides):
    cfg = load_config("configs/grpo_arith.yaml", [
        "runner.max_steps=3", "data.batch_size=4", "algorithm.group_size=4", "cluster.num_devices=3",
        "cluster.component_placement={actor: 0, rollout: 0, reward: 0, reference: 1-2}",
        "algorithm.kl_coef=0.1", "actor.lr=3e-3", "runner.log_interval=1", "actor.micro_batch_size=4",
        "data.eval_size=4", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false",
        f"runner.output_dir={tmp_path / 'run'}", "runner.progress_bar=false", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_arith")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "kl/seq_mean" in r]


def test_reference_group_on_its_own_devices_starts_equal_to_the_policy(cluster, tmp_path):
    """pi_ref is the actor's initial policy, sharded over two ranks of its own: at step 1 (weights not yet
    updated) the KL of the batch and the actor's KL loss term are 0 up to float rounding; after updates
    the policy has moved away from it."""
    summary, rows = _run(tmp_path, "algorithm.kl_in=loss")
    assert summary["placement"]["components"]["reference"] == [1, 2]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert abs(rows[0]["kl/seq_mean"]) < 1e-4 and abs(rows[0]["actor/kl"]) < 1e-5, rows[0]
    assert rows[-1]["kl/seq_mean"] > 1e-3, rows
    assert all(r["kl/coef"] == 0.1 for r in rows)


def test_kl_in_reward_with_the_adaptive_coefficient(cluster, tmp_path):
    """kl_in=reward with a target: the logged coefficient of step k+1 is Ziegler's update of step k's,
    driven by step k's mean sequence KL over the batch's 16 samples."""
    target, horizon = 0.05, 100
    _, rows = _run(tmp_path, "algorithm.kl_in=reward", f"algorithm.kl_target={target}",
                   f"algorithm.kl_horizon={horizon}", "algorithm.kl_estimator=k1")
    assert "actor/kl" not in rows[0]  # the penalty is in the reward, not in the loss
    assert rows[0]["kl/coef"] == 0.1
    for prev, cur in zip(rows, rows[1:]):
        error = min(max(prev["kl/seq_mean"] / target - 1.0, -0.2), 0.2)
        assert cur["kl/coef"] == pytest.approx(prev["kl/coef"] * (1 + error * N_ROWS / horizon), rel=1e-9)
    assert rows[1]["kl/coef"] < 0.1  # step 1's KL is ~0, far below the target: the coefficient falls
