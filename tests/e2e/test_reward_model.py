"""Reward-model training through the real system (runner.workflow: reward_model): a tiny 2-rank FSDP2 run
whose saved Hugging Face directory loads with transformers and scores as the workers did; resume from a
checkpoint reproduces the uninterrupted run; a malformed preference file exits 2 before Ray starts; and
(marked `learning`) configs/rm_synthetic.yaml reaches held-out pair accuracy >= 0.8."""

import json
import shutil

import pytest
import torch

from rlinf.config import load_config
from rlinf.envs.text import load_task
from rlinf.envs.text.files import encode_pairs
from rlinf.placement import build_placement
from rlinf.run import run_training
from rlinf.workflows import components_for
from rlinf.workflows.reward_model import pad_pairs, pair_metrics

pytestmark = pytest.mark.timeout(300)

RECIPE = "configs/rm_synthetic.yaml"
TINY = ["cluster.num_devices=2", "data.batch_size=8", "actor.micro_batch_size=3", "data.train_size=64",
        "data.eval_size=15", "runner.eval_interval=0", "runner.log_interval=1", "runner.progress_bar=false",
        "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false"]


def _run(out, max_steps, save_interval, resume=None):
    cfg = load_config(RECIPE, [*TINY, f"runner.max_steps={max_steps}", f"runner.save_interval={save_interval}",
                               f"runner.output_dir={out}"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    return cfg, run_training(cfg, placement, "rm_synthetic", resume=resume)


def _train_rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "rm/loss" in r}


@pytest.fixture(scope="module")
def four_steps(cluster, tmp_path_factory):
    """A 4-step, 2-rank run with checkpoints at steps 2 and 4: (config, summary, run directory)."""
    out = tmp_path_factory.mktemp("rm") / "full"
    cfg, summary = _run(out, 4, 2)
    return cfg, summary, out


def _transformers_metrics(cfg, export):
    """Held-out pair metrics of the exported directory, scored by plain transformers."""
    from transformers import AutoModelForSequenceClassification

    from rlinf.models.tokenizer import load_tokenizer

    assert {"config.json", "model.safetensors"} <= {p.name for p in export.iterdir()}
    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    tok = load_tokenizer(str(export))
    pairs = encode_pairs(tok, load_task(cfg.data).eval, cfg.data.max_length, "data.path")
    batch = pad_pairs(pairs, tok.pad_token_id)
    with torch.no_grad():
        n, _, width = batch["input_ids"].shape
        scores = model(input_ids=batch["input_ids"].reshape(2 * n, width),
                       attention_mask=batch["attention_mask"].reshape(2 * n, width)).logits.reshape(n, 2)
    return pair_metrics(scores, batch["margin"])


def _assert_same_scores(mine, final):
    assert final["num_pairs"] == 15 and mine["num_pairs"] == 15
    for key in ("loss", "reward_gap", "pair_accuracy"):
        assert mine[key] == pytest.approx(final[key], abs=1e-5), key


def test_saved_reward_model_loads_with_transformers_and_scores_as_the_workers(four_steps):
    cfg, full, out = four_steps
    rows = _train_rows(out)
    assert sorted(rows) == [1, 2, 3, 4] and all(r["samples"] == 8 for r in rows.values())
    assert all(r["rm/grad_norm"] > 0 for r in rows.values())
    # The step-4 export, read by plain transformers, scores the held-out pairs as the workers did (the
    # final evaluation: 15 pairs over 2 ranks, one padded).
    _assert_same_scores(_transformers_metrics(cfg, out / "checkpoints" / "step_000004" / "reward_model"),
                        full["eval"]["final"])
    assert full["eval"]["final"]["loss"] != full["eval"]["start"]["loss"]  # the weights did change


# ZeRO-2 in `make test` (the DeepSpeed op it compiles once per machine is shared with
# test_deepspeed_actor.py); ZeRO-3 (gathered export) and resume under DeepSpeed in `make test-slow`.
@pytest.mark.slow
@pytest.mark.parametrize("stage,resume", [(2, False), pytest.param(3, False, marks=pytest.mark.extended),
                                          pytest.param(2, True, marks=pytest.mark.extended)])
def test_deepspeed_backend_trains_and_exports(cluster, tmp_path, stage, resume):
    pytest.importorskip("deepspeed")
    out = tmp_path / "ds"
    ds = ["actor.backend=deepspeed", f"actor.zero_stage={stage}"]

    def run(steps, resume_from=None):
        cfg = load_config(RECIPE, [*TINY, *ds, f"runner.max_steps={steps}", "runner.save_interval=2",
                                   f"runner.output_dir={out}"])
        placement = build_placement(cfg.cluster.component_placement, 2, 1, components_for(cfg))
        return cfg, run_training(cfg, placement, "rm_synthetic", resume=resume_from)

    cfg, summary = run(2)
    rows = _train_rows(out)
    assert sorted(rows) == [1, 2] and all(r["rm/grad_norm"] > 0 for r in rows.values())
    assert (out / "checkpoints" / "step_000002" / "actor" / "rlinf").is_dir()  # DeepSpeed's own checkpoint
    _assert_same_scores(_transformers_metrics(cfg, out / "checkpoints" / "step_000002" / "reward_model"),
                        summary["eval"]["final"])
    assert summary["eval"]["final"]["loss"] != summary["eval"]["start"]["loss"]
    if resume:  # continued to step 4 from the step-2 checkpoint: the same as 4 uninterrupted steps
        _, resumed = run(4, str(out))
        uninterrupted = out.parent / "ds_full"
        out = uninterrupted
        _, full = run(4)
        assert resumed["resumed_from_step"] == 2 and resumed["eval"]["final"] == full["eval"]["final"]
        a, b = _train_rows(tmp_path / "ds"), _train_rows(uninterrupted)
        for step in (3, 4):
            assert {k: v for k, v in a[step].items() if not k.startswith(("time/", "throughput/"))} == \
                {k: v for k, v in b[step].items() if not k.startswith(("time/", "throughput/"))}, step


def test_resume_from_checkpoint_matches_the_uninterrupted_run(four_steps, tmp_path):
    """A copy of the run cut back to its step-2 checkpoint, resumed to step 4, logs what the
    uninterrupted run logged at steps 3-4 and ends with the same evaluation."""
    cfg, full, out = four_steps
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "checkpoints" / "step_000004")
    _, resumed = _run(cut, 4, 2, resume=str(cut))
    assert resumed["resumed_from_step"] == 2
    rows, again = _train_rows(out), _train_rows(cut)
    for step in (3, 4):
        for key, value in rows[step].items():
            if not key.startswith(("time/", "throughput/")):
                assert again[step][key] == value, (step, key)
    assert resumed["eval"]["final"] == full["eval"]["final"]


def test_malformed_preference_file_exits_2_before_ray(tmp_path, capsys, monkeypatch):
    from rlinf.run import main
    from rlinf.scheduler import cluster as cluster_module

    def no_cluster(*_args, **_kwargs):
        raise AssertionError("a cluster was started: the bad file was not found before the workers")

    monkeypatch.setattr(cluster_module.Cluster, "__init__", no_cluster)
    bad = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "say a:", "chosen": "aa", "rejected": "b"}] * 4 + [{"prompt": "say a:", "chosen": "a"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["--config", RECIPE, "data.task=preference", f"data.path={bad}", "data.eval_size=1",
                 f"runner.output_dir={out}"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("rlinf:")]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and "row 5" in lines[0] and "column 'rejected'" in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.learning
@pytest.mark.timeout(1200)
def test_rm_synthetic_recipe_reaches_heldout_pair_accuracy(cluster, tmp_path):
    cfg = load_config(RECIPE, [f"runner.output_dir={tmp_path}", "runner.progress_bar=false"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "rm_synthetic")
    final = summary["eval"]["final"]
    assert final["num_pairs"] == cfg.data.eval_size
    assert summary["eval"]["start"]["pair_accuracy"] < 0.6  # an untrained model is at chance
    assert final["pair_accuracy"] >= 0.8, final
    export = tmp_path / "checkpoints" / f"step_{cfg.runner.max_steps:06d}" / "reward_model"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
