"""Bad input table: every case exits with code 2, one line on stderr naming the problem, no
traceback, and no run directory written. Cases past config validation start the real runner."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARITH = "configs/grpo_arith.yaml"
CARTPOLE = "configs/ppo_cartpole_mlp.yaml"
LIBERO = "configs/grpo_libero_spatial_tinyvla.yaml"

pytestmark = pytest.mark.timeout(120)


def _files(tmp: Path) -> dict:
    (tmp / "bad.jsonl").write_text('{"question": "1+1", "answer": "#### 2"}\nnot json\n')
    (tmp / "nokeys.jsonl").write_text('{"q": "1+1"}\n{"q": "2+2"}\n')
    (tmp / "dup.yaml").write_text("runner:\n  seed: 1\nrunner:\n  seed: 2\n")
    (tmp / "tabs.yaml").write_text("runner:\n\tmax_steps: 3\n")
    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "empty_ckpt").mkdir(exist_ok=True)
    # a model directory with its config and a tokenizer but no weights; and weights without a config
    no_weights = tmp / "no_weights"
    no_weights.mkdir(exist_ok=True)
    (no_weights / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    (no_weights / "rlinf_char_tokenizer.json").write_text(json.dumps({"chars": "0123456789+-*=(), .?:#"}))
    no_config = tmp / "no_config"
    no_config.mkdir(exist_ok=True)
    (no_config / "model.safetensors").write_bytes(b"")
    (no_config / "rlinf_char_tokenizer.json").write_text(json.dumps({"chars": "0123456789+-*=(), .?:#"}))
    return {"tmp": tmp}


CASES = [
    # (id, args, fragment of the one-line message)
    ("missing-config", ["--config", "configs/missing.yaml"], "config file not found"),
    ("duplicate-yaml-key", ["--config", "{tmp}/dup.yaml"], "duplicate key"),
    ("malformed-yaml", ["--config", "{tmp}/tabs.yaml"], "malformed YAML"),
    ("yaml-not-mapping", ["--config", "{tmp}/list.yaml"], "top level must be a mapping"),
    ("unknown-section", ["--config", ARITH, "trainer.steps=3"], "unknown key"),
    ("typo-key", ["--config", ARITH, "algorithm.max_stalenes=1"], "did you mean 'algorithm.max_staleness'"),
    ("wrong-type", ["--config", ARITH, "runner.max_steps=ten"], "runner.max_steps"),
    ("negative", ["--config", ARITH, "runner.max_restarts=-1"], "runner.max_restarts: must be >= 0"),
    ("out-of-range-float", ["--config", ARITH, "rollout.top_p=1.5"], "rollout.top_p: must be <= 1.0"),
    ("bad-choice", ["--config", ARITH, "actor.backend=megatron"], "actor.backend: must be one of"),
    ("malformed-override", ["--config", ARITH, "runner.max_steps"], "key.path=value"),
    ("override-bad-value", ["--config", ARITH, "rollout.stop=[a"], "cannot parse value"),
    ("placement-out-of-range", ["--config", ARITH, "cluster.component_placement={actor: 0-7, rollout: 0}"],
     "out of range"),
    ("placement-reversed", ["--config", ARITH, "cluster.component_placement={actor: 1-0, rollout: 0}"],
     "reversed range"),
    ("placement-garbage", ["--config", ARITH, "cluster.component_placement={actor: x, rollout: 0}"],
     "cannot parse device spec"),
    ("placement-unknown-component", ["--config", ARITH, "cluster.component_placement={actr: 0, rollout: 0}"],
     "did you mean 'actor'"),
    ("placement-missing-rollout", ["--config", ARITH, "cluster.component_placement={actor: all}"],
     "'rollout' has no devices"),
    ("placement-partial-overlap", ["--config", ARITH, "cluster.num_devices=3",
                                   "cluster.component_placement={actor: 0-1, rollout: 1-2}"], "partially overlap"),
    ("pipeline-without-env", ["--config", ARITH, "rollout.pipeline_stages=2"], "needs an env component"),
    ("unknown-estimator", ["--config", ARITH, "algorithm.adv_estimator=grpoo"], "did you mean 'grpo'"),
    ("unknown-reward", ["--config", ARITH, "reward.name=exact"], "reward.name"),
    ("gae-without-critic", ["--config", ARITH, "algorithm.adv_estimator=gae"], "needs a critic"),
    ("dataset-missing", ["--config", ARITH, "data.task=jsonl", "data.path={tmp}/nope.jsonl"], "dataset file not found"),
    ("dataset-bad-line", ["--config", ARITH, "data.task=jsonl", "data.path={tmp}/bad.jsonl"], "line 2"),
    ("dataset-missing-keys", ["--config", ARITH, "data.task=jsonl", "data.path={tmp}/nokeys.jsonl"],
     "'question' and 'answer'"),
    ("model-dir-missing", ["--config", ARITH, "actor.model.path={tmp}/no_model"], "model directory not found"),
    ("uneven-batch", ["--config", ARITH, "cluster.num_devices=2", "data.batch_size=3", "algorithm.group_size=1"], "do not split evenly"),
    ("resume-missing", ["--config", ARITH, "--resume", "{tmp}/no_run"], "not found"),
    ("resume-no-checkpoint", ["--config", ARITH, "--resume", "{tmp}/empty_ckpt"], "no complete checkpoint"),
    ("unreachable-cluster", ["--config", ARITH, "cluster.address=127.0.0.1:1"], "cannot reach Ray cluster"),
]


# Bad input that only workers read (simulator tasks, model files): found in the controller before the
# cluster starts (rlinf.preflight), so these exit 2 in seconds, with no Ray start and no run directory.
WORKER_INPUT_CASES = [
    pytest.param(["--config", LIBERO, "env.task_ids=[12]"], "env.task_ids: task ids [12] are not tasks of",
                 id="libero-task-id-out-of-range",
                 marks=pytest.mark.skipif(importlib.util.find_spec("libero") is None, reason="libero not installed")),
    pytest.param(["--config", CARTPOLE, "env.id=FrozenLake-v1"], "env.id: observation space Discrete(16)",
                 id="gym-discrete-observations"),
    pytest.param(["--config", CARTPOLE, "env.id=Blackjack-v1"], "env.id: observation space Tuple(",
                 id="gym-tuple-observations"),
    pytest.param(["--config", ARITH, "actor.model.path={tmp}/no_weights"],
                 ("actor.model.path: model directory", "has no weights"), id="model-dir-without-weights"),
    pytest.param(["--config", ARITH, "actor.model.path={tmp}/no_config"],
                 ("actor.model.path: model directory", "has no config.json"), id="model-dir-without-config"),
    pytest.param(["--config", ARITH, "algorithm.adv_estimator=gae", "critic.enabled=true",
                  "critic.model.path={tmp}/no_weights"], ("critic.model.path: model directory", "has no weights"),
                 id="critic-dir-without-weights"),
]


# Cases run through a real `python -m rlinf.run` process (the command line end to end); the rest call
# its `main()` in this process, which is the same code path without an interpreter start per case.
THROUGH_SUBPROCESS = {"missing-config", "unreachable-cluster", "typo-key", "resume-no-checkpoint"}


@pytest.mark.parametrize("args,fragment,subprocess_", [(*c[1:], c[0] in THROUGH_SUBPROCESS) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, args, fragment, subprocess_):
    _check_bad_input(tmp_path, capsys, args, fragment, subprocess_)


@pytest.mark.parametrize("args,fragment", WORKER_INPUT_CASES)
def test_bad_worker_input_found_before_workers(tmp_path, capsys, monkeypatch, args, fragment):
    from rlinf.scheduler import cluster

    def no_cluster(*_args, **_kwargs):
        raise AssertionError("a cluster was started: the bad input was not found before the workers")

    monkeypatch.setattr(cluster.Cluster, "__init__", no_cluster)
    _check_bad_input(tmp_path, capsys, args, fragment, subprocess_=False)


def _check_bad_input(tmp_path, capsys, args, fragment, subprocess_):
    _files(tmp_path)
    out = tmp_path / "run_out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + [f"runner.output_dir={out}"]
    if subprocess_:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-m", "rlinf.run", *argv], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=100)
        code, stderr = r.returncode, r.stderr
    else:
        from rlinf.run import main

        code, stderr = main(argv), capsys.readouterr().err
    lines = [ln for ln in stderr.splitlines() if ln.startswith("rlinf:")]
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    fragments = (fragment,) if isinstance(fragment, str) else fragment
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), stderr[-2000:]
    assert not out.exists()
