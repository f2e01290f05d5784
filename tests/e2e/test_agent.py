"""The agent workflow through the real system: a calculator env group (AgentEnvWorker) playing
multi-turn episodes with a rollout group, from tiny weights that already write calculator calls.

- placement: the env group on the rollout's device or on a device of its own computes the same run
  (lock-step scheduling; one rank per group): every step's metrics are identical;
- the policy calls the calculator (held-out tool-call rate > 0), the transcripts of each
  evaluation are written and show the model's calls and the tool's results;
- bad input (an unknown tool, retrieve without a corpus) exits 2 naming the key.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.preflight import preflight
from rlinf.run import run_training
from rlinf.workflows import components_for
from tests.agent_helpers import format_trained_actor

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false",
         "runner.log_interval=1"]
TINY = ["actor.model.hidden_size=32", "actor.model.num_layers=1", "actor.model.num_heads=2", "env.max_turns=2"]
PLACEMENTS = {"colocated": '{"actor,rollout,env": 0}', "disaggregated": "{actor: 0, rollout: 1, env: 2}"}


def _run(out, *overrides):
    cfg = load_config(str(ROOT / "configs/grpo_calc_agent.yaml"), [*overrides, f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    preflight(cfg)
    return run_training(cfg, placement, "grpo_calc_agent")


@pytest.fixture(scope="module")
def format_trained(cluster, tmp_path_factory):
    """Actor shards of a tiny model that writes well-formed calculator calls (tests.agent_helpers)."""
    path = tmp_path_factory.mktemp("agent") / "init"
    return format_trained_actor(load_config(str(ROOT / "configs/grpo_calc_agent.yaml"), TINY), path)


def _rl(init, out, placement):
    return _run(out, *TINY, *QUIET, f"actor.init_checkpoint={init}", "runner.max_steps=2", "runner.eval_interval=0",
                "data.batch_size=4", "algorithm.group_size=4", "actor.micro_batch_size=16", "data.eval_size=8",
                "env.scheduling=lockstep", "env.transcripts=4", "cluster.num_devices=3",
                f"cluster.component_placement={PLACEMENTS[placement]}")


def _steps(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


def test_env_group_placement_does_not_change_the_run_and_transcripts_show_tool_calls(format_trained, tmp_path):
    summaries = {name: _rl(format_trained, tmp_path / name, name) for name in PLACEMENTS}
    assert _steps(tmp_path / "colocated") == _steps(tmp_path / "disaggregated")
    start = summaries["colocated"]["eval"]["start"]
    assert start["tool_call_rate"] > 0.5  # the format-trained weights were loaded
    train = _steps(tmp_path / "colocated")[1]
    assert train["agent/tool_calls"] > 0 and train["agent/turns"] >= 1 + train["agent/tool_call_rate"] - 1e-9
    transcripts = tmp_path / "colocated" / "transcripts"
    assert sorted(p.name for p in transcripts.iterdir()) == ["eval_step_0.jsonl", "eval_step_0.md",
                                                              "eval_step_2.jsonl", "eval_step_2.md"]
    records = [json.loads(line) for line in (transcripts / "eval_step_0.jsonl").read_text().splitlines()]
    assert len(records) == 4
    called = [r for r in records if r["tool_calls"]]
    assert called, records
    first = called[0]["messages"]
    assert first[0]["role"] == "model" and first[0]["text"].startswith('<tool_call>{"name": "calculator"')
    assert first[1]["role"] == "env" and first[1]["text"].startswith("\n<tool_result>")


@pytest.mark.parametrize("override,key", [("env.tools=[nope]", "env.tools"), ("env.tools=[retrieve]", "env.corpus")])
def test_bad_agent_config_exits_2_naming_the_key(tmp_path, override, key):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlinf.run", "--config", "configs/grpo_calc_agent.yaml", override,
                           f"runner.output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_ppo_with_critic_and_reference_on_agent_rows(format_trained, tmp_path):
    """GAE with a critic and a reference (KL in the reward) on multi-turn rows: the reference starts from the
    same weights as the actor (sequence KL 0 at step 1), the critic trains on the model tokens."""
    out = tmp_path / "ppo"
    _run(out, *TINY, *QUIET, f"actor.init_checkpoint={format_trained}", "runner.max_steps=2",
         "runner.eval_interval=0", "data.batch_size=4", "algorithm.group_size=4", "actor.micro_batch_size=16",
         "data.eval_size=4", "env.scheduling=lockstep", "env.transcripts=0", "critic.enabled=true",
         "algorithm.adv_estimator=gae", "critic.model.hidden_size=32", "critic.model.num_layers=1",
         "critic.model.num_heads=2", "algorithm.kl_coef=0.05", "algorithm.kl_in=reward",
         f"critic.model.char_vocab={load_config(str(ROOT / 'configs/grpo_calc_agent.yaml')).actor.model.char_vocab}")
    steps = [r for r in _steps(out) if "critic/vf_loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert abs(steps[0]["kl/seq_mean"]) < 1e-5 and steps[1]["kl/seq_mean"] != 0.0
    assert all(r["critic/grad_norm"] > 0 and r["agent/tool_calls"] > 0 for r in steps)
    assert not (out / "transcripts").exists()  # env.transcripts=0 writes none
