"""python -m rlinf.eval on a text agent, without Ray: a scripted policy's episodes come out as transcripts
(jsonl + markdown, every tool call and result) with the accuracy per task; a checkpoint's actor shards
are loaded into the causal LM in this process; bad input exits 2 with one line and writes nothing."""

import json
import re
from pathlib import Path

import pytest
import torch

from rlinf.config import load_config
from rlinf.envs.text import TaskSplit, load_task
from rlinf.eval import main
from rlinf.eval_agent import evaluate_agent, load_actor_lm
from rlinf.models.causal_lm import build_causal_lm
from rlinf.workers.env.agent_episodes import AgentEpisodes

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

CONFIG = "configs/grpo_calc_agent.yaml"
TINY = ["actor.model.hidden_size=32", "actor.model.num_layers=1", "actor.model.num_heads=2", "data.eval_size=6",
        "env.max_turns=3"]


def _cfg(tmp_path, *overrides):
    return load_config(CONFIG, [*TINY, f"eval.output_dir={tmp_path / 'out'}", *overrides])


def _scripted(episodes: AgentEpisodes, honest: set):
    """Turn 1: a calculator call on the prompt's expression; turn 2: the tool result as the answer for
    prompts in `honest`, else a wrong one."""
    def generate(contexts):
        turns = []
        for ids in contexts:
            text = episodes.decode(ids)
            expression = re.match(r"(\d+\*\d+)=", text).group(1)
            result = re.search(r"<tool_result>(.*?)</tool_result>", text)
            if result is None:
                turns.append('<tool_call>{"name": "calculator", "input": "' + expression + '"}</tool_call>')
            else:
                turns.append(f"<answer>{result.group(1) if expression in honest else '0'}</answer>")
        tokens = [episodes.encode(t) for t in turns]
        return tokens, [[0.0] * len(t) for t in tokens]
    return generate


def test_transcripts_hold_every_tool_call_and_result_and_the_accuracy_per_task(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    split = load_task(cfg.data)
    samples = split.eval
    for i, s in enumerate(samples):  # two tasks: calc (even prompts) and calc_b (odd ones)
        s.meta["task"] = "calc" if i % 2 == 0 else "calc_b"
    monkeypatch.setattr("rlinf.envs.text.load_task", lambda data: TaskSplit(split.train, samples))
    honest = {s.prompt.rstrip("=") for s in samples[:4]}  # calc: 2 of 3 right, calc_b: 2 of 3
    episodes = AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model)
    summary = evaluate_agent(cfg, None, generate=_scripted(episodes, honest))

    out = Path(summary["output_dir"])
    assert out == tmp_path / "out"
    assert summary["tasks"]["calc"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["tasks"]["calc_b"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["tasks"]["calc"]["num_episodes"] == summary["tasks"]["calc_b"]["num_episodes"] == 3
    assert summary["overall"] == {"num_episodes": 6, "accuracy": pytest.approx(4 / 6), "mean_reward": pytest.approx(4 / 6),
                                  "tool_call_rate": 1.0, "mean_turns": 2.0}
    assert json.loads((out / "eval_summary.json").read_text())["tasks"] == summary["tasks"]

    records = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [s.prompt for s in samples]
    for r, s in zip(records, samples):
        a, b = s.prompt.rstrip("=").split("*")
        call, result, answer = r["messages"]
        assert [m["role"] for m in r["messages"]] == ["model", "env", "model"]
        assert call["text"] == '<tool_call>{"name": "calculator", "input": "' + f"{a}*{b}" + '"}</tool_call>'
        assert result["text"].strip() == f"<tool_result>{int(a) * int(b)}</tool_result>"
        assert r["correct"] == (answer["text"] == f"<answer>{int(a) * int(b)}</answer>")
        assert r["tool_calls"] == 1 and r["reason"] == "answer"
    markdown = (out / "transcripts.md").read_text()
    assert "**calc**: accuracy 66.7% over 3 episodes" in markdown and "**calc_b**: accuracy 66.7%" in markdown
    assert markdown.count("## Episode") == 6 and markdown.count("<tool_result>") == 6


def _save_actor_checkpoint(model, run_dir: Path, step: int) -> Path:
    """A complete checkpoint `run_dir/checkpoints/step_N` whose actor/ holds `model` as the FSDP actor
    saves it (torch.distributed.checkpoint, {"model": state dict})."""
    import torch.distributed.checkpoint as dcp

    ckpt = run_dir / "checkpoints" / f"step_{step:06d}"
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(ckpt / "actor"), no_dist=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
    (ckpt / "COMPLETE").write_text("")
    return ckpt


def test_actor_shards_load_into_the_causal_lm(tmp_path):
    cfg = _cfg(tmp_path)
    vocab = len(AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model).tokenizer)
    saved = build_causal_lm(cfg.actor.model, vocab, seed=123)
    ckpt = _save_actor_checkpoint(saved, tmp_path / "run", 3)
    loaded = load_actor_lm(cfg, ckpt, vocab)  # built from runner.seed, then overwritten
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name].cpu(), tensor), name
    assert not loaded.training


@pytest.mark.parametrize("case", ["missing_dir", "no_checkpoint", "not_an_lm", "model_shape", "unknown_tool"])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, case, capsys):
    cfg = _cfg(tmp_path)
    vocab = len(AgentEpisodes(cfg.env, cfg.reward.name, cfg.actor.model).tokenizer)
    run = tmp_path / "run"
    ckpt = _save_actor_checkpoint(build_causal_lm(cfg.actor.model, vocab), run, 2)
    args = {"missing_dir": [str(tmp_path / "nope")], "no_checkpoint": [str(tmp_path / "out_of_run")],
            "not_an_lm": [str(run)], "model_shape": [str(run), "actor.model.hidden_size=64"],
            "unknown_tool": [str(run), "env.tools=[abacus]"]}[case]
    (tmp_path / "out_of_run").mkdir()
    if case == "not_an_lm":  # an embodied checkpoint: actor/model.pt, no shards
        for f in (ckpt / "actor").iterdir():
            f.unlink()
        (ckpt / "actor" / "model.pt").write_bytes(b"")
    code = main(["--config", CONFIG, "--checkpoint", args[0], *TINY, f"eval.output_dir={tmp_path / 'out'}", *args[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rlinf: error:"), err
    expected = {"missing_dir": "not found", "no_checkpoint": "no complete checkpoint", "not_an_lm": "actor/.metadata",
                "model_shape": "64", "unknown_tool": "abacus"}[case]
    assert expected in err[0]
    assert not (tmp_path / "out").exists() and not list(run.glob("eval-*"))
