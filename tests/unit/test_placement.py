"""Placement grammar, mode inference and rejection of impossible placements."""

import pytest

from rlinf.errors import PlacementError
from rlinf.placement import build_placement, parse_devices


@pytest.mark.parametrize("spec,expected", [
    ("all", [0, 1, 2, 3]), (2, [2]), ("0-3", [0, 1, 2, 3]), ("0,2", [0, 2]), ("0-1,3", [0, 1, 3]),
    ([3, "0-1"], [0, 1, 3]), (" 1 - 2 ", [1, 2]), ("2,2", [2]),
])
def test_parse_devices(spec, expected):
    assert parse_devices(spec, 4) == expected


@pytest.mark.parametrize("spec,fragment", [
    ("0-4", "device 4 out of range"), ("3-1", "reversed range 3-1"), ("a-b", "cannot parse"),
    ("", "cannot parse"), (None, "expected devices"), (True, "expected devices"), ("0,,1", "cannot parse"),
    ("-1", "cannot parse"),
])
def test_parse_devices_rejects(spec, fragment):
    with pytest.raises(PlacementError, match=fragment):
        parse_devices(spec, 4, key="cluster.component_placement.actor")


def test_colocated_from_equal_sets_and_multi_component_key():
    p = build_placement({"actor,rollout": "all", "reward": "0-3"}, 4)
    assert p.mode == "colocated"
    assert p.devices == {"actor": [0, 1, 2, 3], "rollout": [0, 1, 2, 3], "reward": [0, 1, 2, 3]}
    assert p.ranks("rollout")[2] == (2, 2)


def test_disaggregated_from_disjoint_sets():
    p = build_placement({"actor": "0-1", "rollout": "2-3"}, 4)
    assert p.mode == "disaggregated"
    assert p.devices["reward"] == [0, 1]  # unnamed components share the actor's devices
    assert p.world_size("rollout") == 2


def test_hybrid_needs_env_rollout_sharing_and_stages():
    comps = ("actor", "rollout", "env")
    assert build_placement({"actor": "all", "env,rollout": "0-1"}, 4, 2, comps).mode == "hybrid"
    # Without stages it is colocated (actor nests over env/rollout).
    assert build_placement({"actor": "all", "env,rollout": "0-1"}, 4, 1, comps).mode == "colocated"
    # env and rollout disjoint: stages pipeline across devices, mode follows actor/rollout.
    assert build_placement({"actor,rollout": "0-1", "env": "2-3"}, 4, 2, comps).mode == "colocated"


def test_empty_placement_puts_everything_everywhere():
    p = build_placement({}, 2)
    assert p.mode == "colocated" and p.devices["actor"] == [0, 1] and p.devices["reward"] == [0, 1]


@pytest.mark.parametrize("placement,stages,fragment", [
    ({"actor": "0-2", "rollout": "1-3"}, 1, "partially overlap"),
    ({"actr": "all", "rollout": "all"}, 1, "did you mean 'actor'"),
    ({"actor": "all"}, 1, "'rollout' has no devices"),
    ({"actor": "all", "rollout": "all", "actor,reward": 0}, 1, "placed twice"),
    ({"actor": "0-9", "rollout": "all"}, 1, "out of range"),
    ({"actor": "all", "rollout": "all"}, 2, "needs an env component"),
])
def test_invalid_placements_rejected(placement, stages, fragment):
    with pytest.raises(PlacementError, match=fragment):
        build_placement(placement, 4, stages)


def test_describe_names_every_component_and_mode():
    text = build_placement({"actor": "0-1", "rollout": "2-3"}, 4).describe()
    assert "mode: disaggregated" in text
    assert "rollout   2-3" in text and "rank 1->dev 3" in text
