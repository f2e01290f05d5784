"""The default recipe learns: held-out accuracy rises by >= 30 points (the `make run` promise).

Runs configs/grpo_arith.yaml unchanged except for the output directory (about 3-4 minutes here).
"""

import json

import pytest

from rlinf.config import load_config
from rlinf.placement import build_placement
from rlinf.workflows import components_for
from rlinf.run import run_training


@pytest.mark.learning
@pytest.mark.timeout(1800)
def test_grpo_arith_recipe_raises_heldout_accuracy(cluster, tmp_path):
    cfg = load_config("configs/grpo_arith.yaml", [f"runner.output_dir={tmp_path}", "runner.progress_bar=false"])
    placement = build_placement(cfg.cluster.component_placement, cfg.cluster.num_devices, 1, components_for(cfg))
    summary = run_training(cfg, placement, "grpo_arith")
    start, final = summary["eval"]["start"]["accuracy"], summary["eval"]["final"]["accuracy"]
    assert summary["eval"]["final"]["num_samples"] == 180  # held-out operand pairs, never trained on
    assert final - start >= 0.30, (start, final)
    assert json.loads((tmp_path / "summary.json").read_text())["eval"]["final"]["accuracy"] == final
