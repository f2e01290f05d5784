"""`python -m rlinf.run`: dry-run/print-config output, and exit code 2 with one line on bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rlinf.run", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


def test_dry_run_prints_config_and_placement_plan():
    r = run_cli("--config", "configs/grpo_arith.yaml", "--dry-run", "cluster.num_devices=4",
                "cluster.component_placement={actor: 0-1, rollout: 2-3}")
    assert r.returncode == 0, r.stderr
    assert "# placement plan" in r.stdout and "mode: disaggregated" in r.stdout
    assert "rollout   2-3" in r.stdout
    resolved = yaml.safe_load(r.stdout.split("# placement plan")[0])
    assert resolved["cluster"]["num_devices"] == 4


def test_print_config_is_loadable_yaml():
    r = run_cli("--config", "configs/grpo_arith.yaml", "--print-config", "runner.max_steps=3")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["runner"]["max_steps"] == 3


@pytest.mark.parametrize("args,fragment", [
    (["--config", "configs/nope.yaml"], "configs/nope.yaml: config file not found"),
    (["--config", "configs/grpo_arith.yaml", "runner.max_setps=3"], "did you mean 'runner.max_steps'"),
    (["--config", "configs/grpo_arith.yaml", "algorithm.max_staleness=-2"], "algorithm.max_staleness: must be >= 0"),
    (["--config", "configs/grpo_arith.yaml", "cluster.num_devices=1", "cluster.component_placement={actor: 0-3, rollout: 0}"],
     "device 3 out of range"),
    (["--config", "configs/grpo_arith.yaml", "cluster.num_devices=4", "cluster.component_placement={actor: 0-2, rollout: 1-3}"],
     "partially overlap"),
    (["--config", "configs/grpo_arith.yaml", "rollout.pipeline_stages=2"], "needs an env component"),
    (["--config", "configs/grpo_arith.yaml", "runner.max_steps"], "key.path=value"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "run"
    r = run_cli(*args, f"runner.output_dir={out}")
    assert r.returncode == 2
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_malformed_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runner:\n  max_steps: [1, 2\n")
    r = run_cli("--config", str(bad))
    assert r.returncode == 2 and "malformed YAML" in r.stderr and "Traceback" not in r.stderr
