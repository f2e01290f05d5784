"""End-to-end PPO on ManiSkill3 PushCube-v1 (state obs, physx CPU) through env, rollout and actor groups."""

import json

import pytest
import yaml

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

pytest.importorskip("mani_skill")

CONFIG = "configs/ppo_maniskill_pushcube_mlp.yaml"
TINY = ["runner.max_steps=2", "runner.eval_interval=0", "env.num_envs=4", "env.rollout_steps=10",
        "actor.global_batch_size=20", "env.eval_episodes=2", "env.max_episode_steps=10",
        "actor.model.hidden_size=32", "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false"]


@pytest.mark.timeout(240)
def test_tiny_pushcube_run_reports_success_metrics(cluster, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(CONFIG, [f"runner.output_dir={out}", *TINY])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "ppo_maniskill_pushcube_mlp")
    for phase in ("start", "final"):
        ev = summary["eval"][phase]
        assert ev["num_episodes"] == 2 and "success_rate" in ev
        assert ev["length"] == 10 and 0.0 <= ev["return"] <= 10.0  # normalized_dense: reward in [0, 1]
    assert json.loads((out / "summary.json").read_text())["eval"]["final"] == summary["eval"]["final"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all(r["samples"] == 4 * 10 for r in train)
    # 10 env steps per training step, 10-step episodes (the recipe ignores terminations): every env finishes one each step
    assert all(r["env/episodes"] == 4 and r["env/length"] == 10 and "env/success_rate" in r for r in train)
    assert yaml.safe_load((out / "config.yaml").read_text())["env"]["simulator"] == "maniskill"


@pytest.mark.learning
@pytest.mark.timeout(1200)
def test_recipe_learns_pushcube_in_25_steps(cluster, tmp_path):
    """The recipe as shipped, cut to its first 25 updates (25 x 32 envs x 32 steps): the greedy policy's
    mean return on 32 held-out episodes (normalized dense reward, 50-step episodes, at most 50) rises by
    >= 1.5. Measured with `rlinf.run` and these overrides: 3.54 -> 6.41 (seed 1), 3.59 -> 8.74 (seed 2),
    3.48 -> 8.05 (seed 3), i.e. +2.9 to +5.2, in 104-125 s per run at load 4-10. Success after 25 updates
    is only 0.06-0.22 (the full 250-step recipe reaches ~0.7), too close to 0 on 32 episodes to assert."""
    out = tmp_path / "run"
    cfg = load_config(CONFIG, [f"runner.output_dir={out}", "runner.max_steps=25", "runner.eval_interval=0",
                               "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "ppo_maniskill_pushcube_mlp")
    start, final = summary["eval"]["start"], summary["eval"]["final"]
    assert start["num_episodes"] == final["num_episodes"] == 32
    assert final["return"] - start["return"] >= 1.5, summary["eval"]
