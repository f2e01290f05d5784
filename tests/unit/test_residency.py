"""Residency plan (rlinf.runners.residency): who leaves and who comes back before each phase."""

import pytest

from rlinf.runners.residency import Residency, plan_transition

COLOCATED = {"actor": [0, 1], "rollout": [0, 1], "reward": [0, 1], "critic": [0, 1], "reference": [0, 1]}


def test_colocated_groups_leave_the_phases_that_do_not_need_them():
    offloadable = {"actor", "reference", "critic", "rollout"}
    everyone = set(COLOCATED)
    assert plan_transition(COLOCATED, offloadable, everyone, "collect") == (["actor", "critic", "reference"], [])
    resident = everyone - {"actor", "critic", "reference"}
    assert plan_transition(COLOCATED, offloadable, resident, "train") == (["rollout"], ["actor", "critic", "reference"])
    resident = everyone - {"rollout"}
    # weight sync needs actor and rollout; the critic and reference stay until they are in the way
    assert plan_transition(COLOCATED, offloadable, resident, "sync_weights") == (["critic", "reference"], ["rollout"])


def test_groups_that_may_not_offload_stay_and_separate_devices_never_move():
    assert plan_transition(COLOCATED, {"rollout"}, set(COLOCATED), "collect") == ([], [])
    mixed = {"actor": [0], "reference": [0], "critic": [1], "reward": [1], "rollout": [2]}
    # generation on device 2 and the reward on device 1: the critic shares device 1 with the reward
    assert plan_transition(mixed, {"actor", "reference", "critic"}, set(mixed), "collect") == (["critic"], [])
    disaggregated = {"actor": [0], "rollout": [1], "reward": [1]}
    assert plan_transition(disaggregated, {"actor", "rollout"}, set(disaggregated), "collect") == ([], [])
    assert plan_transition(disaggregated, {"actor", "rollout"}, set(disaggregated), "train") == ([], [])


def test_unknown_phase_is_an_error():
    with pytest.raises(ValueError, match="unknown phase 'generate'"):
        plan_transition(COLOCATED, set(), set(), "generate")


class _Group:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def call(self, method):
        self.log.append((method, self.name))
        return self

    def wait(self):
        return [None]


def test_enter_offloads_before_it_onloads_and_tracks_who_is_resident():
    log = []
    groups = [_Group(n, log) for n in ("actor", "rollout", "reward")]
    r = Residency({"actor": [0], "rollout": [0], "reward": [0]}, {"actor", "rollout"})
    r.enter("collect", groups)
    r.enter("train", groups)
    r.enter("train", groups)  # already resident: nothing moves
    r.enter("sync_weights", groups)
    assert log == [("offload", "actor"), ("offload", "rollout"), ("onload", "actor"), ("onload", "rollout")]
    assert r.resident == {"actor", "rollout", "reward"}
    assert not Residency({"actor": [0]}, {"critic"}).active  # no group of the run may offload
