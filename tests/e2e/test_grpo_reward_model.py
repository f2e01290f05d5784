"""GRPO on arith with a learned reward model served by the reward group (reward.type=model), mixed with
exact_match through reward.weights: the scores the workflow trains on and logs equal the weighted sum
recomputed here (transformers' forward of the saved reward model + the verifier), with the reward group
on the actor's device and on a device of its own; running normalisation's state reaches the checkpoint.
Bad reward.model.path exits 2 before any cluster starts."""

import json
import math

import pytest

from rlinf.config import load_config
from rlinf.models.tokenizer import CharTokenizer
from rlinf.placement import build_placement
from rlinf.run import run_training
from rlinf.runners import checkpoints
from rlinf.workers.reward.verifiers import exact_match
from rlinf.workflows import components_for
from rlinf.workflows.reasoning import ReasoningWorkflow
from tests.rm_helpers import ARITH_CHARS, hf_scores, save_char_reward_model

pytestmark = pytest.mark.timeout(300)

ARITH = "configs/grpo_arith.yaml"


def _record_generate(monkeypatch):
    """Record every scored generation (prompt and answer per row, greedy) and its texts and scores, in the
    controller, where each one ends (`finish_generation`: training batches, collected ahead or not, and
    evaluations)."""
    calls = []
    original = ReasoningWorkflow.finish_generation

    def recording(self, issued, score=True):
        out = original(self, issued, score)
        if score:
            calls.append({"prompts": issued.prompt_texts, "answers": issued.answers, "greedy": issued.greedy,
                          "texts": out["texts"], "scores": out["scores"].tolist()})
        return out

    monkeypatch.setattr(ReasoningWorkflow, "finish_generation", recording)
    return calls


def _raw_and_exact(rm_path, call):
    tok = CharTokenizer(ARITH_CHARS)
    seqs = [tok.encode(p + t) + [tok.eos_token_id] for p, t in zip(call["prompts"], call["texts"])]
    return hf_scores(rm_path, seqs), [exact_match(t, a) for a, t in zip(call["answers"], call["texts"])]


@pytest.mark.parametrize("placement_args", [
    pytest.param(["cluster.num_devices=1"], id="reward-on-actor-device"),
    pytest.param(["cluster.num_devices=2", "cluster.component_placement={actor: 0, rollout: 0, reward: 1}"],
                 id="reward-on-own-device"),
])
def test_grpo_with_reward_model(cluster, tmp_path, monkeypatch, placement_args):
    rm_path = save_char_reward_model(tmp_path / "rm", seed=7)
    normalize = "running" if "reward: 1" in placement_args[-1] else "none"
    cfg = load_config(ARITH, [
        "runner.max_steps=2", "runner.eval_interval=0", "runner.log_interval=1", "runner.save_interval=2",
        "data.batch_size=4", "algorithm.group_size=2", "data.eval_size=4", "actor.micro_batch_size=8",
        "runner.plots=false", "runner.tensorboard=false", "runner.progress_bar=false",
        f"runner.output_dir={tmp_path / 'run'}", "reward.type=model", f"reward.model.path={rm_path}",
        f"reward.model.normalize={normalize}", "reward.model.micro_batch_size=3",
        "reward.weights={model: 1.0, exact_match: 1.0}", *placement_args])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    calls = _record_generate(monkeypatch)
    summary = run_training(cfg, placement, "grpo_rm")
    assert summary["steps"] == 2
    train_calls = [c for c in calls if not c["greedy"]]
    assert len(train_calls) == 2 and all(len(c["scores"]) == 8 for c in train_calls)
    seen = []  # raw reward-model scores of training batches so far (what running normalisation sees)
    for call in train_calls:
        raw, exact = _raw_and_exact(rm_path, call)
        seen += raw
        if normalize == "running":
            mean = sum(seen) / len(seen)
            std = math.sqrt(sum((x - mean) ** 2 for x in seen) / len(seen))
            raw = [(x - mean) / max(std, 1e-6) for x in raw]
        assert call["scores"] == pytest.approx([m + e for m, e in zip(raw, exact)], abs=1e-5)
    assert max(seen) - min(seen) > 1e-3  # the model's share varies between responses
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["reward/mean"] for r in rows if "reward/mean" in r]
    assert logged == pytest.approx([sum(c["scores"]) / 8 for c in train_calls], abs=1e-5)
    ckpt, step = checkpoints.latest(tmp_path / "run")
    saved = ckpt / "reward" / "reward_state.json"
    assert step == 2
    if normalize == "running":  # evaluation (greedy) scores were not added to the statistics
        state = json.loads(saved.read_text())["normalizer"]
        assert state["count"] == 16 and state["mean"] == pytest.approx(sum(seen) / 16, abs=1e-6)
    else:
        assert not saved.parent.exists() and (saved.parent.parent / "actor").is_dir()


def test_bad_reward_model_path_exits_2_before_the_cluster(tmp_path, capsys, monkeypatch):
    from rlinf.run import main
    from rlinf.scheduler import cluster

    def no_cluster(*_args, **_kwargs):
        raise AssertionError("a cluster was started: the bad input was not found before the workers")

    monkeypatch.setattr(cluster.Cluster, "__init__", no_cluster)
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    for path, fragment in ((tmp_path / "nope", "reward model directory not found"),
                           (lm, "is not a sequence-classification model")):
        out = tmp_path / "run_out"
        code = main(["--config", ARITH, "reward.type=model", f"reward.model.path={path}",
                     f"runner.output_dir={out}"])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rlinf:")]
        assert code == 2 and len(lines) == 1, lines
        assert "reward.model.path" in lines[0] and fragment in lines[0]
        assert not out.exists()
