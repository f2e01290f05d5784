"""Config schema: loading, overrides, and one clear error per kind of bad input."""

import pytest

from rlinf.config import RLinfConfig, build_config, load_config, parse_overrides, to_yaml
from rlinf.errors import ConfigError


def test_defaults_and_required_keys():
    cfg = build_config({})
    assert isinstance(cfg, RLinfConfig)
    # Keys the issue requires by name.
    assert cfg.cluster.num_devices == 1 and cfg.cluster.address is None
    assert cfg.cluster.component_placement == {}
    assert cfg.rollout.pipeline_stages == 1 and cfg.algorithm.max_staleness == 0
    assert cfg.runner.output_dir is None and cfg.runner.max_restarts == 0


def test_yaml_then_overrides_take_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("runner:\n  max_steps: 7\nalgorithm:\n  max_staleness: 1\n")
    cfg = load_config(p, ["algorithm.max_staleness=3", "rollout.stop=['</s>', 'x']", "cluster.address=auto"])
    assert cfg.runner.max_steps == 7
    assert cfg.algorithm.max_staleness == 3
    assert cfg.rollout.stop == ["</s>", "x"]
    assert cfg.cluster.address == "auto"


def test_placement_dict_replaced_not_merged_with_default(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cluster:\n  component_placement:\n    actor: 0-1\n    rollout: '2,3'\n")
    assert load_config(p).cluster.component_placement == {"actor": "0-1", "rollout": "2,3"}


def test_override_values_are_yaml_not_code():
    tree = parse_overrides(["a.b=__import__('os').system('true')", "a.c=1e-3", "d=[1, 2]"])
    assert tree["a"]["b"] == "__import__('os').system('true')"  # a plain string, never evaluated
    assert tree["a"]["c"] == pytest.approx(1e-3) and tree["d"] == [1, 2]


def test_round_trip_yaml(tmp_path):
    cfg = build_config({}, ["runner.max_steps=3"])
    p = tmp_path / "resolved.yaml"
    p.write_text(to_yaml(cfg))
    assert load_config(p) == cfg


BAD = [
    # (yaml text or None, overrides, expected key in message, expected fragment)
    ("clustr: {}\n", [], "clustr", "did you mean 'cluster'"),
    (None, ["runner.max_step=3"], "runner.max_step", "did you mean 'runner.max_steps'"),
    (None, ["runner.max_steps=abc"], "runner.max_steps", "could not be converted"),
    (None, ["algorithm.max_staleness=-1"], "algorithm.max_staleness", "must be >= 0"),
    (None, ["algorithm.gamma=1.5"], "algorithm.gamma", "must be <= 1.0"),
    (None, ["rollout.engine=vlm"], "rollout.engine", "did you mean 'vllm'"),
    (None, ["runner.progress_bar=maybe"], "runner.progress_bar", "not a valid bool"),
    (None, ["noequals"], None, "key.path=value"),
    (None, ["bad key=1"], None, "malformed override key"),
    (None, ["runner.max_steps=[1"], "runner.max_steps", "cannot parse value"),
    ("cluster: 3\n", [], "cluster", "expected a mapping"),
    ("runner:\n  max_steps: 1\n  max_steps: 2\n", [], "max_steps", "duplicate key"),
    ("runner: [1, 2\n", [], ".yaml", "malformed YAML"),
    ("- 1\n- 2\n", [], ".yaml", "top level must be a mapping"),
    ("cluster:\n  num_devices: 1.5\n", [], "cluster.num_devices", "could not be converted"),
    (None, ["runner.stop_metric=accuracy", "runner.eval_interval=5"], "runner.stop_value", "together"),
    (None, ["runner.stop_value=0.5", "runner.eval_interval=5"], "runner.stop_metric", "together"),
    (None, ["runner.stop_metric=accuracy", "runner.stop_value=0.5"], "runner.eval_interval", "periodic evaluations"),
    (None, ["runner.stop_metric=return", "runner.stop_value=1", "runner.eval_interval=5"], "runner.stop_metric",
     "reports accuracy, reward, not 'return'"),
    (None, ["env.id=CartPole-v1", "runner.stop_metric=success_rate", "runner.stop_value=1", "runner.eval_interval=5"],
     "runner.stop_metric", "reports return, length, not 'success_rate'"),
]


@pytest.mark.parametrize("text,overrides,key,fragment", BAD)
def test_bad_input_names_the_problem(tmp_path, text, overrides, key, fragment):
    p = tmp_path / "c.yaml"
    p.write_text(text or "{}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, overrides)
    msg = str(err.value)
    if key:
        assert key in msg
    assert fragment in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
