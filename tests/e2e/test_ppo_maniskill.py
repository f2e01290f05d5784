"""End-to-end PPO on ManiSkill3 PushCube-v1 (state obs, physx CPU) through env, rollout and actor groups."""

import json

import pytest
import yaml

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.runners.components import components_for
from rlinf.runners.runner import run

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
    summary = run(cfg, placement, "ppo_maniskill_pushcube_mlp")
    for phase in ("start", "final"):
        ev = summary["eval"][phase]
        assert ev["num_episodes"] == 2 and 0.0 <= ev["success_rate"] <= 1.0
        assert ev["length"] == 10 and 0.0 <= ev["return"] <= 10.0  # normalized_dense: reward in [0, 1]
    assert json.loads((out / "summary.json").read_text())["eval"]["final"] == summary["eval"]["final"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all(r["samples"] == 4 * 10 for r in train)
    # 10 env steps per training step, 10-step episodes (the recipe ignores terminations): every env finishes one each step
    assert all(r["env/episodes"] == 4 and r["env/length"] == 10 and "env/success_rate" in r for r in train)
    assert yaml.safe_load((out / "config.yaml").read_text())["env"]["simulator"] == "maniskill"
