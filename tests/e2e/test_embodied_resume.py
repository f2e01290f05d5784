"""Embodied checkpoint / resume (CartPole PPO): a run resumed from its step-3 checkpoint logs the same
metrics at steps 4-6 as the uninterrupted run (actor model, optimizer, lr schedule, minibatch RNG,
rollout sampling RNG and the training envs' simulation state are all restored); with
`runner.max_restarts` a SIGKILLed env rank is restarted from the last checkpoint and the run
completes every step."""

import json
import shutil

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training

pytestmark = pytest.mark.timeout(300)

CONFIG = "configs/ppo_cartpole_mlp.yaml"
TINY = ["runner.progress_bar=false", "runner.log_interval=1", "runner.eval_interval=0", "runner.stop_metric=null", "runner.stop_value=null", "runner.plots=false",
        "runner.tensorboard=false", "env.num_envs=4", "env.rollout_steps=16", "actor.global_batch_size=32",
        "env.eval_episodes=2", "env.max_episode_steps=20", "cluster.num_devices=2",
        "cluster.component_placement={actor: 0-1, rollout: 0-1, env: 0-1}"]


def _run(out, *overrides, resume=None):
    cfg = load_config(CONFIG, [*TINY, f"runner.output_dir={out}", *overrides])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    return run_training(cfg, placement, "ppo_cartpole_mlp", resume=resume)


def _train_rows(path):
    rows = [json.loads(line) for line in open(path / "metrics.jsonl")]
    return {r["step"]: r for r in rows if "actor/pg_loss" in r}


def _same(full, other, steps):
    for step in steps:
        for key, value in full[step].items():
            if not key.startswith(("time/", "throughput/")) and key != "actor/update_time_s":
                assert other[step][key] == value, (step, key, other[step][key], value)


def test_embodied_resume_reproduces_uninterrupted_metrics(cluster, tmp_path):
    full = _run(tmp_path / "full", "runner.max_steps=6", "runner.save_interval=3")
    ckpt = tmp_path / "full" / "checkpoints" / "step_000003"
    assert {"COMPLETE", "trainer_state.json", "workflow.pt"} <= {p.name for p in ckpt.iterdir()}
    assert {"model.pt", "optim.pt", "meta.json", "rng_rank0.pt", "rng_rank1.pt"} <= {
        p.name for p in (ckpt / "actor").iterdir()}
    assert sorted(p.name for p in (ckpt / "env").iterdir()) == ["rank_0.json", "rank_1.json"]
    # The "cut" run: the full run's directory as it stood after step 3.
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_000006")
    summary = _run(tmp_path / "cut", "runner.max_steps=6", "runner.save_interval=3", resume=str(tmp_path / "cut"))
    assert summary["resumed_from_step"] == 3
    rows_full, rows_cut = _train_rows(tmp_path / "full"), _train_rows(tmp_path / "cut")
    assert sorted(rows_cut) == [1, 2, 3, 4, 5, 6]
    assert any(rows_full[s]["actor/grad_norm"] > 0 for s in (4, 5, 6)), "test needs non-trivial updates"
    assert rows_full[6]["actor/lr"] < rows_full[4]["actor/lr"]  # linear schedule resumed at the right point
    assert any(rows_full[s].get("env/episodes", 0) > 0 for s in (4, 5, 6))  # episodes end and auto-reset
    _same(rows_full, rows_cut, (4, 5, 6))
    assert summary["eval"]["final"] == full["eval"]["final"]


def test_embodied_resume_rejects_other_model_shape(cluster, tmp_path):
    _run(tmp_path / "a", "runner.max_steps=1", "runner.save_interval=1", "runner.timeline=false")
    before = {f: (tmp_path / "a" / f).read_text() for f in ("config.yaml", "metrics.jsonl")}
    with pytest.raises(InputError, match="this config builds"):
        _run(tmp_path / "a", "runner.max_steps=2", "actor.model.hidden_size=32", resume=str(tmp_path / "a"))
    with pytest.raises(InputError, match="trained on 'CartPole-v1'"):
        _run(tmp_path / "a", "runner.max_steps=2", "env.id=Acrobot-v1", resume=str(tmp_path / "a"))
    # Rejected before any worker starts or the run directory is touched.
    assert before == {f: (tmp_path / "a" / f).read_text() for f in ("config.yaml", "metrics.jsonl")}
