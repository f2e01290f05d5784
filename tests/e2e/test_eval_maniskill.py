"""python -m rlinf.eval on a ManiSkill PushCube checkpoint: success rate in eval_summary.json and an mp4 of
the env's own rendering."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

pytest.importorskip("mani_skill")
pytestmark = pytest.mark.timeout(300)

CONFIG = "configs/ppo_maniskill_pushcube_mlp.yaml"
SMALL = ["env.max_episode_steps=8", "actor.model.hidden_size=32", "env.image_size=64"]
TRAIN = ["runner.max_steps=1", "runner.save_interval=1", "env.num_envs=2", "env.rollout_steps=8",
         "actor.global_batch_size=8", "env.eval_episodes=1", "runner.progress_bar=false", "runner.plots=false",
         "runner.tensorboard=false", *SMALL]
ROOT = Path(__file__).resolve().parents[2]


def test_eval_cli_on_maniskill_checkpoint_writes_summary_and_video(cluster, tmp_path):
    import imageio.v2 as imageio

    run_dir = tmp_path / "run"
    cfg = load_config(CONFIG, [*TRAIN, f"runner.output_dir={run_dir}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    run_training(cfg, placement, "ppo_maniskill_pushcube_mlp")

    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rlinf.eval", "--config", CONFIG, "--checkpoint", str(run_dir),
                           "eval.num_episodes=2", "eval.video=true", "eval.num_videos=1", "env.num_envs=2",
                           f"eval.output_dir={out}", *SMALL],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    task = json.loads((out / "eval_summary.json").read_text())["tasks"]["PushCube-v1"]
    assert task["num_episodes"] == 2 and task["mean_length"] == 8  # terminations ignored: full episodes
    assert task["success_rate"] in (0.0, 0.5, 1.0)  # PushCube reports success
    assert len(task["videos"]) == 1
    frames = [f for f in imageio.get_reader(task["videos"][0])]
    # 64 px frames, upscaled 6x by rlinf.eval so the caption stays readable
    assert len(frames) == 8 + 1 and frames[0].shape[:2] == (384, 384) and frames[0].std() > 0
