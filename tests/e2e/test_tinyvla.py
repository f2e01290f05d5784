"""Tiny VLA end to end through env, rollout and actor groups: PPO on ManiSkill PushCube from images with
OFT-style action chunks, and GRPO on LIBERO-Spatial with action tokens and group-shared init states."""

import json

import numpy as np
import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.eval_interval=0"]


def _run(config, out, overrides):
    cfg = load_config(config, [f"runner.output_dir={out}", *QUIET, *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, config.split("/")[-1].split(".")[0])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "actor/pg_loss" in r]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tiny_vla_ppo_with_action_chunks_on_maniskill(cluster, tmp_path):
    pytest.importorskip("mani_skill")
    # 4 envs x 10 steps = 5 decisions of 2-action chunks per env; 10-step episodes (terminations ignored)
    summary, train = _run("configs/ppo_maniskill_tinyvla.yaml", tmp_path / "run",
                          ["runner.max_steps=2", "env.num_envs=4", "env.rollout_steps=10", "env.max_episode_steps=10",
                           "env.eval_episodes=2", "actor.global_batch_size=10", "actor.model.num_layers=1",
                           "actor.model.vision_layers=1"])
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["samples"] == 4 * 5 and r["env/episodes"] == 4 and r["env/length"] == 10 for r in train)
    assert all(np.isfinite(r["actor/pg_loss"]) and r["critic/value_loss"] > 0 for r in train)
    # chunk-level rewards: the value head learns (the loss is computed) and entropy is per action: <= 7 ln 256
    assert all(0 < r["actor/entropy"] <= 7 * np.log(256) + 1e-3 for r in train)
    for phase in ("start", "final"):
        ev = summary["eval"][phase]
        assert ev["num_episodes"] == 2 and ev["length"] == 10 and "success_rate" in ev


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tiny_vla_grpo_on_libero_groups_share_init_states(cluster, tmp_path):
    pytest.importorskip("libero")
    from rlinf.config import EnvConfig
    from rlinf.workers.env.worker import EnvWorker

    worker = EnvWorker(EnvConfig(simulator="libero", id="libero_spatial", task_ids=[0], num_envs=2, obs_mode="rgb",
                                 image_size=64, max_episode_steps=4), stages=1, seed=0)
    try:
        shared = worker.reset(seeds=[[5, 5]])[0]
        assert np.array_equal(shared["image"][0], shared["image"][1])  # one group: the same init state
        apart = worker.reset(seeds=[[5, 6]])[0]
        assert not np.array_equal(apart["image"][0], apart["image"][1])
    finally:
        worker._rlinf_shutdown()
    summary, train = _run("configs/grpo_libero_spatial_tinyvla.yaml", tmp_path / "run",
                          ["runner.max_steps=1", "env.num_envs=2", "env.rollout_steps=4", "env.max_episode_steps=4",
                           "env.eval_episodes=1", "actor.model.num_layers=1", "actor.model.vision_layers=1"])
    # one episode per env per step (GRPO), 4 steps each; no value head trained
    assert len(train) == 1 and train[0]["samples"] == 2 * 4 and train[0]["env/episodes"] == 2
    assert train[0]["env/length"] == 4 and train[0]["critic/value_loss"] == 0.0
    assert summary["eval"]["final"]["num_episodes"] == 1 and summary["eval"]["final"]["length"] == 4
