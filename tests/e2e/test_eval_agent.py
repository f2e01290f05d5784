"""python -m rlinf.eval on a text agent, against the run it evaluates: a one-step calculator-agent run
(Ray, actor + rollout + env groups) starts from weights that already write calculator calls, evaluates
the held-out prompts greedily at its end and saves a checkpoint; the in-process evaluation of that
checkpoint (no Ray) plays the same episodes, token for token, and reports the accuracy the run logged."""

import json
from pathlib import Path

import pytest

from rlinf.config import load_config
from rlinf.envs.agent.tool_env import parse_turn
from rlinf.eval import main
from rlinf.placement import build_placement
from rlinf.preflight import preflight
from rlinf.run import run_training
from rlinf.tools import call as call_tool
from rlinf.workflows import components_for
from tests.agent_helpers import format_trained_actor

pytestmark = [pytest.mark.timeout(240), pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]

CONFIG = "configs/grpo_calc_agent.yaml"
TINY = ["actor.model.hidden_size=32", "actor.model.num_layers=1", "actor.model.num_heads=2", "data.eval_size=8",
        "env.max_turns=2", "env.scheduling=lockstep"]  # lockstep: both sides batch the turns alike
RUN = ["cluster.num_devices=1", "runner.max_steps=1", "runner.eval_interval=1", "runner.save_interval=1",
       "algorithm.group_size=2", "data.batch_size=2", "actor.micro_batch_size=4", "env.transcripts=8",
       "runner.progress_bar=false", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false"]


@pytest.fixture(scope="module")
def agent_run(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("agent_eval")
    init = format_trained_actor(load_config(CONFIG, TINY), base / "init")
    out = base / "run"
    cfg = load_config(CONFIG, [*TINY, *RUN, f"actor.init_checkpoint={init}", f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                cfg.rollout.pipeline_stages, components_for(cfg))
    preflight(cfg)
    run_training(cfg, placement, "grpo_calc_agent")
    return out


def test_eval_of_the_checkpoint_replays_the_runs_final_evaluation(agent_run, capsys):
    assert main(["--config", str(agent_run / "config.yaml"), "--checkpoint", str(agent_run)]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.parent == agent_run and out.name.startswith("eval-")
    summary = json.loads((out / "eval_summary.json").read_text())
    final = [r for r in map(json.loads, (agent_run / "metrics.jsonl").read_text().splitlines())
             if "eval/accuracy" in r][-1]
    assert summary["step"] == final["step"] == 1
    assert summary["tasks"]["calc"] == summary["overall"]
    assert summary["overall"]["num_episodes"] == final["eval/num_samples"] == 8
    assert summary["overall"]["accuracy"] == final["eval/accuracy"]
    assert summary["overall"]["tool_call_rate"] == final["eval/tool_call_rate"]
    assert summary["overall"]["mean_turns"] == final["eval/turns"]

    records = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (agent_run / "transcripts" / "eval_step_1.jsonl").read_text().splitlines()]
    assert records == theirs  # same greedy policy, same prompts: the same turns, tool results and grades
    assert sum(r["tool_calls"] for r in records) > 0
    for r in records:
        for turn, reply in zip(r["messages"][0::2], r["messages"][1::2]):
            parsed = parse_turn(turn["text"])
            assert turn["role"] == "model" and reply["role"] == "env" and parsed.kind == "tool", r
            expected = call_tool(parsed.tool, parsed.tool_input).observation()
            assert reply["text"] == f"\n<tool_result>{expected}</tool_result>\n"
    assert (out / "transcripts.md").read_text().count("## Episode") == 8
