"""docs/configuration.md is generated from the schema and must be up to date."""

from pathlib import Path

from rlinf.config.docs import render


def test_configuration_reference_is_up_to_date():
    path = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert path.read_text() == render(), "run: python -m rlinf.config.docs > docs/configuration.md"


def test_every_key_is_documented():
    text = render()
    for key in ("cluster.num_devices", "cluster.address", "cluster.component_placement", "rollout.pipeline_stages",
                "algorithm.max_staleness", "runner.output_dir", "runner.max_restarts"):
        assert f"`{key}`" in text
    assert "| |" not in text  # no field without help text
