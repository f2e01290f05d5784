"""Tiny VLA with LoRA (actor.model.lora_rank=4) end to end on ManiSkill PushCube: the run trains and syncs
only the trainable tensors, its checkpoint holds only those, and rlinf.eval, rebuilding the frozen base
from the config and the checkpoint's seed, acts exactly as the run's rollout replica did (same greedy
episodes, same returns), so the rollout's base never diverged from the actor's."""

import json

import numpy as np
import pytest
import torch

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

CONFIG = "configs/ppo_maniskill_tinyvla.yaml"
TINY = ["env.num_envs=4", "env.rollout_steps=10", "env.max_episode_steps=10", "env.eval_episodes=2",
        "actor.global_batch_size=10", "actor.model.num_layers=1", "actor.model.vision_layers=1",
        "actor.model.lora_rank=4", "actor.model.lora_alpha=8", "runner.seed=3"]
QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.eval_interval=0"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_vla_lora_run_checkpoint_and_eval_agree(cluster, tmp_path):
    pytest.importorskip("mani_skill")
    from rlinf.eval import evaluate

    run_dir = tmp_path / "run"
    cfg = load_config(CONFIG, [f"runner.output_dir={run_dir}", *QUIET, *TINY, "runner.max_steps=2",
                               "runner.save_interval=2", "actor.lr=1e-3"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    summary = run_training(cfg, placement, "ppo_maniskill_tinyvla_lora")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "actor/pg_loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all(np.isfinite(r["actor/pg_loss"]) for r in train)

    actor_dir = run_dir / "checkpoints" / "step_000002" / "actor"
    meta = json.loads((actor_dir / "meta.json").read_text())
    assert meta["weights"] == "trainable" and meta["base_seed"] == 3 and meta["model"]["lora_rank"] == 4
    saved = torch.load(actor_dir / "model.pt", weights_only=True)
    assert saved and all("lora_" in k or k.split(".")[0] in ("projector", "proprio", "action_queries", "value_head")
                         for k in saved)
    assert any(float(v.abs().max()) > 0 for k, v in saved.items() if "lora_B" in k)  # zero at init: trained

    # rlinf.eval on the checkpoint, same episodes as the run's final greedy evaluation
    ev_cfg = load_config(CONFIG, [*TINY, "eval.num_episodes=2", "eval.seed=1000003", "env.num_envs=2",
                                  f"eval.output_dir={tmp_path / 'eval'}"])
    result = evaluate(ev_cfg, str(run_dir))["tasks"]["PushCube-v1"]
    final = summary["eval"]["final"]
    assert result["num_episodes"] == final["num_episodes"] == 2
    assert result["mean_return"] == pytest.approx(final["return"], rel=1e-5, abs=1e-6)
