"""Controller overhead off a timeline (rlinf.utils.timeline): union of worker phases per step, hand-computed.

The hand-built run: a warm-up step [0, 10], then steps [10, 20], [20, 30], [32, 36].
  step [10, 20]: rollout ranks 0/1 generate [11, 14] and [12, 15] (overlap) with a nested sub-phase
      [12.5, 13.5], reward [16, 17], actor update [18, 22] (crosses into the next step): busy 4 + 1 + 2 = 7,
      idle 3 in gaps (10, 11), (15, 16), (17, 18); fraction 0.3.
  step [20, 30]: the update's [20, 22], send_weights [25, 26] touching generate [26, 27], reward [29.5, 31]
      (crosses the step's end): busy 2 + 2 + 0.5 = 4.5, idle 5.5 in (22, 25), (27, 29.5); fraction 0.55.
  step [32, 36]: no worker busy: idle 4, fraction 1.
The controller's own sub-phases (collect) never count as busy.
"""

import math

import pytest

from rlinf.utils.timeline import (idle_by_neighbours, merge_intervals, overhead_summary, read_timeline,
                                  step_overhead, uncovered, write_timeline)


def _ev(group, name, start, end, rank=0):
    return {"group": group, "rank": rank, "name": name, "start": start, "end": end}


EVENTS = [
    _ev("controller", "step", 0, 10), _ev("controller", "step", 10, 20), _ev("controller", "step", 20, 30),
    _ev("controller", "step", 32, 36), _ev("controller", "collect", 10, 15.5),
    _ev("actor", "update", 1, 9),
    _ev("rollout", "generate", 11, 14, rank=0), _ev("rollout", "generate", 12, 15, rank=1),
    _ev("rollout", "sample", 12.5, 13.5, rank=0),
    _ev("reward", "score", 16, 17), _ev("actor", "update", 18, 22),
    _ev("actor", "send_weights", 25, 26), _ev("rollout", "generate", 26, 27), _ev("reward", "score", 29.5, 31),
    _ev("env", "broken", math.nan, 5.0),
]


def test_merge_intervals_overlap_nesting_touching_and_empty():
    assert merge_intervals([(3, 5), (1, 2), (2, 2.5), (4, 6), (7, 7), (3.5, 4)]) == [(1, 2.5), (3, 6)]
    assert merge_intervals([]) == []


def test_uncovered_clips_to_the_window():
    merged = [(1, 2.5), (3, 6)]
    assert uncovered(merged, 0, 10) == [(0, 1), (2.5, 3), (6, 10)]
    assert uncovered(merged, 2, 4) == [(2.5, 3)]
    assert uncovered(merged, 6.5, 7) == [(6.5, 7)]
    assert uncovered(merged, 3.5, 5) == []
    assert uncovered([], 1, 2) == [(1, 2)]


def test_step_overhead_per_step():
    rows = step_overhead(EVENTS)
    assert [r["index"] for r in rows] == [1, 2, 3]  # the warm-up step is left out
    assert [r["wall_s"] for r in rows] == [10, 10, 4]
    assert [r["busy_s"] for r in rows] == [7, 4.5, 0]
    assert [r["idle_s"] for r in rows] == [3, 5.5, 4]
    assert [r["fraction"] for r in rows] == [0.3, 0.55, 1.0]
    assert rows[0]["gaps"] == [(10, 11), (15, 16), (17, 18)]
    assert rows[1]["gaps"] == [(22, 25), (27, 29.5)]
    # From a step's start to the next one's: [20, 32] adds the reward's [30, 31] and the idle [31, 32].
    assert [(r["loop_s"], r["loop_idle_s"]) for r in rows] == [(10, 3), (12, 6.5), (None, None)]
    assert [r["index"] for r in step_overhead(EVENTS, warmup=0)] == [0, 1, 2, 3]
    assert step_overhead(EVENTS, warmup=0)[0]["idle_s"] == 2  # [0, 1] and [9, 10]


def test_overhead_summary():
    summary = overhead_summary(step_overhead(EVENTS))
    assert summary["steps"] == 3
    assert summary["median_fraction"] == 0.55
    assert summary["mean_fraction"] == pytest.approx((0.3 + 0.55 + 1.0) / 3)
    assert summary["pooled_fraction"] == pytest.approx(12.5 / 24)
    assert (summary["step_s"], summary["busy_s"], summary["idle_s"]) == (10, 4.5, 4)
    assert summary["loop_fraction"] == pytest.approx((3 + 6.5) / (10 + 12))
    assert overhead_summary([]) == {"steps": 0}


def test_idle_by_neighbours_names_the_phases_around_each_gap():
    table = idle_by_neighbours(EVENTS, step_overhead(EVENTS))
    assert table[0] == ("step start", "step end", 1, 4.0)
    assert table[1] == ("rollout.generate", "reward.score", 2, 3.5)  # (15, 16) and (27, 29.5)
    assert {(b, a): (n, s) for b, a, n, s in table} == {
        ("step start", "step end"): (1, 4.0),
        ("rollout.generate", "reward.score"): (2, 3.5),
        ("actor.update", "actor.send_weights"): (1, 3.0),
        ("step start", "rollout.generate"): (1, 1.0),
        ("reward.score", "actor.update"): (1, 1.0),
    }


def test_read_timeline_round_trip(tmp_path):
    t0 = 1_700_000_000.0
    events = [{**e, "start": e["start"] + t0, "end": e["end"] + t0} for e in EVENTS if e["group"] != "env"]
    write_timeline(tmp_path / "timeline.json", events)
    back = read_timeline(tmp_path / "timeline.json")
    assert sorted((e["group"], e["rank"], e["name"]) for e in back) == sorted(
        (e["group"], e["rank"], e["name"]) for e in events)
    rows = step_overhead(back)
    assert [r["busy_s"] for r in rows] == pytest.approx([7, 4.5, 0])
    assert [r["fraction"] for r in rows] == pytest.approx([0.3, 0.55, 1.0])
