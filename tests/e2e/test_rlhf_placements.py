"""Four-model PPO (actor, critic, reference, learned reward model; rollout generating) in the three
placement kinds: everything on one device, each group on a device of its own, and a mix. With one
rank per group the placement changes where work runs, not what is computed: the metrics of every step
are identical across the three."""

import json

import pytest

from rlinf.config import ModelConfig, load_config
from rlinf.models.reward_model import build_reward_model, save_reward_model
from rlinf.models.tokenizer import CharTokenizer
from rlinf.placement import build_placement
from rlinf.run import main, run_training
from rlinf.workflows import components_for

pytestmark = pytest.mark.timeout(300)

CHARS = "0123456789+="
PLACEMENTS = {
    "colocated": '{"actor,critic,reference,reward,rollout": 0}',
    "disaggregated": "{actor: 0, critic: 1, reference: 2, reward: 3, rollout: 4}",
    "mixed": '{"actor,reference": 0, "critic,reward": 1, rollout: 2}',
}


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm") / "reward_model"
    tok = CharTokenizer(CHARS)
    save_reward_model(build_reward_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=4), len(tok), seed=5),
                      tok, str(path))
    return path


def _overrides(rm_dir, placement, out):
    return [
        "runner.max_steps=2", "data.batch_size=2", "algorithm.group_size=2", "algorithm.adv_estimator=gae",
        "critic.enabled=true", "critic.micro_batch_size=4", "algorithm.kl_coef=0.05", "algorithm.kl_in=reward",
        "reward.type=model", f"reward.model.path={rm_dir}", "cluster.num_devices=5",
        f"cluster.component_placement={PLACEMENTS[placement]}", "actor.micro_batch_size=4", "data.eval_size=2",
        "runner.log_interval=1", "runner.plots=false", "runner.tensorboard=false", "runner.timeline=false",
        "runner.progress_bar=false", f"runner.output_dir={out}"]


def _steps(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


def test_every_placement_runs_the_same_four_model_ppo(cluster, tmp_path, reward_model_dir):
    results = {}
    for name in PLACEMENTS:
        cfg = load_config("configs/grpo_arith.yaml", _overrides(reward_model_dir, name, tmp_path / name))
        placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices,
                                    cfg.rollout.pipeline_stages, components_for(cfg))
        summary = run_training(cfg, placement, name)
        assert summary["placement"]["components"] == placement.as_dict()["components"]
        results[name] = _steps(tmp_path / name)
    assert results["colocated"] == results["disaggregated"] == results["mixed"]
    rows = results["colocated"]
    train = [r for r in rows if "critic/vf_loss" in r]
    assert [r["step"] for r in train] == [1, 2] and all("kl/seq_mean" in r for r in train)
    assert "eval/rm_reward" in rows[0] and "eval/kl" in rows[0]


def test_dry_run_shows_each_groups_devices_and_the_mode(tmp_path, reward_model_dir, capsys):
    code = main(["--config", "configs/grpo_arith.yaml", "--dry-run",
                 *_overrides(reward_model_dir, "mixed", tmp_path / "never")])
    plan = capsys.readouterr().out.split("# placement plan", 1)[1]
    assert code == 0 and not (tmp_path / "never").exists()
    assert "mode: disaggregated" in plan  # the actor and the rollout are on different devices
    for line in ("actor     0", "reference 0", "critic    1", "reward    1", "rollout   2"):
        assert line in plan, plan
