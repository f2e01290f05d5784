"""SFT through the real system (runner.workflow: sft, configs/sft_tiny.yaml): a short 2-rank run lowers the
held-out assistant-token NLL; its checkpoint starts a later run bit for bit (actor.init_checkpoint: the
second run's first evaluation equals the first run's last) and an RL run whose reference starts from the
same weights (KL 0 at step 1); a checkpoint that does not fit, or is missing, is bad input (exit 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlinf.config import load_config
from rlinf.errors import InputError
from rlinf.placement import build_placement
from rlinf.preflight import preflight
from rlinf.run import run_training
from rlinf.workflows import components_for

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false",
         "runner.log_interval=1"]
SFT = ["cluster.num_devices=2", "runner.eval_interval=0", *QUIET]


def _run(recipe, out, *overrides):
    cfg = load_config(recipe, [*overrides, f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    preflight(cfg)
    return run_training(cfg, placement, Path(recipe).stem)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(cluster, tmp_path_factory):
    """30 SFT steps (32 conversations each) on 2 ranks, checkpoint at the end: (summary, run directory)."""
    out = tmp_path_factory.mktemp("sft") / "run"
    return _run("configs/sft_tiny.yaml", out, *SFT, "runner.max_steps=30", "runner.save_interval=30"), out


def test_sft_lowers_held_out_loss_and_writes_a_loadable_checkpoint(sft_run):
    summary, out = sft_run
    start, final = summary["eval"]["start"], summary["eval"]["final"]
    # 60 held-out rows x (2 answer digits + EOS) assistant tokens; a 15-token vocabulary starts near ln 15
    assert start["tokens"] == final["tokens"] == 180 and start["truncated"] == 0
    assert start["loss"] > 2.5 and final["loss"] < start["loss"] - 0.5, (start, final)
    assert final["token_accuracy"] > start["token_accuracy"] + 0.2
    train = [r for r in _rows(out) if "sft/loss" in r]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert all(r["samples"] == 32 and r["sft/assistant_tokens"] == 96 and r["sft/grad_norm"] > 0 for r in train)
    ckpt = out / "checkpoints" / "step_000030"
    assert (ckpt / "COMPLETE").exists() and (ckpt / "actor" / ".metadata").is_file()
    from transformers import AutoModelForCausalLM

    from rlinf.models.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(ckpt / "actor_hf")  # actor.model.path can point here
    assert len(load_tokenizer(str(ckpt / "actor_hf"))) == model.config.vocab_size == 15


def test_init_checkpoint_starts_the_next_run_from_the_sft_weights(sft_run, tmp_path):
    """Same eval rows, same 2-rank split: the second run's start evaluation is the first run's final one,
    float for float, only if the actor holds exactly the checkpoint's weights."""
    summary, out = sft_run
    second = _run("configs/sft_tiny.yaml", tmp_path / "again", *SFT, "runner.max_steps=1",
                  f"actor.init_checkpoint={out}")
    assert second["eval"]["start"] == summary["eval"]["final"]


def test_rl_run_from_the_sft_checkpoint_has_its_reference_there_too(sft_run, tmp_path):
    """GRPO on the arithmetic task from the SFT checkpoint, the reference (KL anchor) on its own device:
    actor and reference start from the same checkpoint weights, so the step-1 KL is 0 up to rounding."""
    _, out = sft_run
    _run("configs/grpo_arith.yaml", tmp_path / "rl", *QUIET, "runner.max_steps=1", "data.batch_size=4",
         "algorithm.group_size=4", "data.eval_size=4", "cluster.num_devices=2", "algorithm.kl_coef=0.1",
         "cluster.component_placement={actor: 0, rollout: 0, reward: 0, reference: 1}",
         f"actor.init_checkpoint={out / 'checkpoints' / 'step_000030'}")
    step1 = next(r for r in _rows(tmp_path / "rl") if r["step"] == 1 and "actor/kl" in r)
    assert abs(step1["actor/kl"]) < 1e-6 and abs(step1["kl/seq_mean"]) < 1e-5, step1


def test_a_checkpoint_of_another_model_is_refused_naming_the_key(sft_run):
    _, out = sft_run
    cfg = load_config("configs/sft_tiny.yaml", [f"actor.init_checkpoint={out}", "actor.model.hidden_size=32"])
    with pytest.raises(InputError, match=r"actor.init_checkpoint: .*'model.lm_head.weight': checkpoint has "
                                         r"shape \[15, 64\] float32, this config builds \[15, 32\]"):
        preflight(cfg)
    cfg = load_config("configs/ppo_cartpole_mlp.yaml", [f"actor.init_checkpoint={out}"])
    with pytest.raises(InputError, match="actor.init_checkpoint: starts the FSDP causal-LM actor"):
        preflight(cfg)


def test_missing_init_checkpoint_exits_2_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "rlinf.run", "--config", "configs/sft_tiny.yaml",
                           f"actor.init_checkpoint={tmp_path / 'missing'}", f"runner.output_dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rlinf: error: actor.init_checkpoint: checkpoint directory not found: {tmp_path / 'missing'}")
    assert not out.exists()
