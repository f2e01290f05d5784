"""python -m rlinf.eval on LIBERO with the benchmark protocol, on a tiny budget: a (untrained) tiny-VLA
checkpoint through the CLI (1 task x 1 episode, video), and a scripted policy through `evaluate(policy=...)`
(2 episodes side by side from init states 0 and 1, action chunks executed open-loop)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlinf.config import load_config

pytestmark = pytest.mark.timeout(400)

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 4
CONFIG = {
    "actor": {"model": {"kind": "vla", "action_head": "chunk", "action_chunk": 2, "hidden_size": 32, "num_layers": 1,
                        "num_heads": 2, "vision_hidden_size": 32, "vision_layers": 1, "patch_size": 16,
                        "instruction_tokens": 24}},
    "env": {"simulator": "libero", "id": "libero_spatial", "obs_mode": "rgb", "image_size": 64, "num_envs": 1,
            "max_episode_steps": MAX_STEPS},
    "runner": {"progress_bar": False},
}
SPEC = {"obs_dim": 9, "action_dim": 7, "discrete": False, "obs_shape": None, "image_shape": (64, 64, 3),
        "state_dim": 9, "action_low": [-1.0] * 7, "action_high": [1.0] * 7}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("libero_eval") / "tinyvla_libero.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _checkpoint(cfg, run_dir: Path) -> Path:
    """A checkpoint as the embodied actor writes it (untrained weights)."""
    import torch

    from rlinf.models.policy import build_policy, policy_spec

    ckpt = run_dir / "checkpoints" / "step_000001"
    (ckpt / "actor").mkdir(parents=True)
    model = build_policy(cfg.actor.model, SPEC, cfg.runner.seed)
    torch.save(model.state_dict(), ckpt / "actor" / "model.pt")
    meta = {"version": 1, "world_size": 1, "model": policy_spec(cfg.actor.model, SPEC)}
    (ckpt / "actor" / "meta.json").write_text(json.dumps(meta))
    (ckpt / "COMPLETE").write_text("")
    return ckpt


def test_libero_eval_cli_tinyvla_one_task_with_video(config_file, tmp_path):
    import imageio.v2 as imageio

    from rlinf.envs.libero_env import task_instructions

    cfg = load_config(str(config_file), [])
    _checkpoint(cfg, tmp_path / "run")
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "rlinf.eval", "--config", str(config_file), "--checkpoint",
                           str(tmp_path / "run"), "env.task_ids=[0]", "eval.num_episodes=1", "eval.video=true",
                           f"eval.output_dir={out}"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["simulator"] == "libero" and summary["step"] == 1 and list(summary["tasks"]) == [
        "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"]
    task = next(iter(summary["tasks"].values()))
    assert task["task_id"] == 0 and task["instruction"] == task_instructions("libero_spatial")[0]
    # an untrained policy does not finish the task in 4 steps: the episode runs into the time limit
    assert task["episodes"] == [{"seed": 0, "return": 0.0, "length": MAX_STEPS, "success": False, "init_state": 0}]
    assert task["success_rate"] == 0.0 and task["mean_length"] == MAX_STEPS
    assert summary["overall"] == {"num_episodes": 1, "mean_return": 0.0, "return_std": 0.0,
                                  "mean_length": float(MAX_STEPS), "success_rate": 0.0}
    frames = [f for f in imageio.get_reader(task["videos"][0])]
    assert len(frames) == MAX_STEPS + 1
    assert frames[0].shape[:2] == (384, 384) and frames[-1].std() > 0  # 64 px frames upscaled for the text


def test_libero_eval_scripted_policy_chunks_and_init_states(config_file, tmp_path):
    from rlinf.eval import evaluate

    class Scripted:
        """Open-loop: lift the end effector, close the gripper (chunks of 2 actions)."""

        action_chunk = 2

        def __init__(self):
            self.calls = []

        def act(self, obs):
            assert obs["image"].dtype == np.uint8 and obs["state"].shape == (2, 9)
            self.calls.append(list(obs["instruction"]))
            chunk = np.zeros((len(obs["state"]), 2, 7))
            chunk[:, :, 2], chunk[:, :, 6] = 0.5, 1.0
            return chunk

    policy = Scripted()
    cfg = load_config(str(config_file), ["env.task_ids=[1]", "env.num_envs=2", "eval.num_episodes=2",
                                         "env.max_episode_steps=3", f"eval.output_dir={tmp_path}"])
    summary = evaluate(cfg, None, policy=policy)
    task = summary["tasks"]["pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate"]
    assert [e["init_state"] for e in task["episodes"]] == [0, 1]
    assert [e["length"] for e in task["episodes"]] == [3, 3]
    assert len(policy.calls) == 2  # 3 steps = chunk of 2 + chunk of 2 (its second action unused)
    assert policy.calls[0] == [task["instruction"]] * 2
    assert summary["checkpoint"] is None and summary["videos"] == []
    assert (tmp_path / "eval_summary.json").exists()
