"""python -m rlinf.eval: a CartPole checkpoint evaluated from the command line writes eval_summary.json
and an annotated mp4; the same seeds give the same results; bad input exits 2 with one line."""

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

pytestmark = pytest.mark.timeout(240)

CONFIG = "configs/ppo_cartpole_mlp.yaml"
# lr 1e-6 keeps the policy near its (long-balancing) initialisation, so the recorded episode reaches the
# 30-step time limit and the video has 31 frames, whatever the two updates did.
TRAIN = ["runner.max_steps=2", "runner.save_interval=1", "env.num_envs=4", "env.rollout_steps=16",
         "actor.global_batch_size=32", "env.eval_episodes=1", "env.max_episode_steps=30", "actor.lr=1e-6",
         "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    cfg = load_config(CONFIG, [*TRAIN, f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    run_training(cfg, placement, "ppo_cartpole_mlp")
    return out


def _eval(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rlinf.eval", "--config", CONFIG, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_eval_cli_writes_summary_and_video(trained, tmp_path):
    import imageio.v2 as imageio

    out = tmp_path / "eval"
    proc = _eval("--checkpoint", str(trained), "eval.num_episodes=3", "eval.video=true", "eval.num_videos=1",
                 "env.max_episode_steps=30", f"eval.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step_000002")  # run dir -> newest
    task = summary["tasks"]["CartPole-v1"]
    assert task["num_episodes"] == 3 and len(task["episodes"]) == 3
    assert [e["seed"] for e in task["episodes"]] == [summary["seed"] + i for i in range(3)]
    assert 1 <= task["mean_return"] <= 30 and task["mean_length"] == task["mean_return"]  # CartPole: +1 per step
    assert task["success_rate"] is None  # CartPole reports no success
    assert len(task["videos"]) == 1 and summary["videos"] == task["videos"]
    video = Path(task["videos"][0])
    assert video.exists() and video.suffix == ".mp4" and video.stat().st_size > 2000
    frames = [f for f in imageio.get_reader(video)]  # (list() trips on the reader's infinite len())
    assert len(frames) >= 10 and len(frames) == task["episodes"][0]["length"] + 1
    assert frames[0].shape[:2] == (400, 600) and frames[0].std() > 0


def test_eval_is_deterministic_and_defaults_to_run_dir(trained):
    from rlinf.eval import evaluate

    ckpt = trained / "checkpoints" / "step_000001"
    cfg = load_config(CONFIG, ["eval.num_episodes=4", "env.num_envs=3", "env.max_episode_steps=30"])
    a = evaluate(cfg, str(ckpt))
    cfg = load_config(CONFIG, ["eval.num_episodes=4", "env.num_envs=1", "env.max_episode_steps=30"])
    b = evaluate(cfg, str(ckpt))  # batch size does not change results: episode i always starts from seed + i
    assert a["tasks"] == b["tasks"] and a["step"] == 1
    assert Path(a["output_dir"]).parent == trained and Path(a["output_dir"]).name.startswith("eval-")
    assert (Path(a["output_dir"]) / "eval_summary.json").exists()


@pytest.mark.parametrize("case", ["missing_dir", "no_checkpoint", "model_shape", "unknown_env", "bad_key"])
def test_eval_bad_input_exits_2(trained, tmp_path, case):
    args = {"missing_dir": ["--checkpoint", str(tmp_path / "nope")],
            "no_checkpoint": ["--checkpoint", str(tmp_path)],
            "model_shape": ["--checkpoint", str(trained), "actor.model.hidden_size=32"],
            "unknown_env": ["--checkpoint", str(trained), "env.id=CartPole-v9"],
            "bad_key": ["--checkpoint", str(trained), "eval.num_episode=3"]}[case]
    proc = _eval(*args, f"eval.output_dir={tmp_path / 'out'}" if case != "bad_key" else "eval.seed=1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlinf: error:"), proc.stderr
    assert not (tmp_path / "out").exists()
    expected = {"missing_dir": "not found", "no_checkpoint": "no complete checkpoint", "model_shape": "32",
                "unknown_env": "CartPole-v1", "bad_key": "eval.num_episodes"}[case]
    assert expected in lines[0]
