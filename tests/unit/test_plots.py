"""Run plots: bad values are left out, and a failing plot never fails the run that made it.

The crash this guards against (a PushCube run, /tmp/ms_run2): the run was stopped with SIGTERM, and while
`Runner.close` drew the 13k-phase timeline a second signal landed inside Agg's clip-box conversion, which
matplotlib reports as `ValueError: Invalid bounding box`; the data itself plotted fine.
"""

import logging
import math

import pytest

from rlinf.utils import plots
from rlinf.utils.rundir import RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(path):
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def _rows():
    """Metric rows shaped like a PushCube run's metrics.jsonl, with the values that break axis limits."""
    rows = [{"step": 0, "eval/success_rate": 0.0, "eval/return": 3.4}]
    for step in range(1, 51):
        rows.append({"step": step, "env/success_rate": step / 50, "env/return": 3.0 + step / 10,
                     "actor/entropy": 3.5, "critic/vf_loss": None if step % 7 == 0 else 0.1,
                     "throughput/samples_per_s": math.inf if step == 3 else 900.0,
                     "staleness/max": math.nan, "reward/mean": True})
        if step % 25 == 0:
            rows.append({"step": step, "eval/success_rate": 0.5, "eval/return": float("-inf")})
    return rows


def test_curves_skip_non_finite_values_and_empty_series(tmp_path, caplog):
    path = tmp_path / "curves.png"
    with caplog.at_level(logging.WARNING, logger="rlinf.utils.plots"):
        drawn = plots.plot_curves(_rows(), path)
    assert _png(path)
    # staleness/max is all NaN and reward/mean only booleans: no subplot; the rest keep their finite points
    assert "staleness/max" not in drawn and "reward/mean" not in drawn
    assert {"eval/success_rate", "eval/return", "env/success_rate", "critic/vf_loss",
            "throughput/samples_per_s"} <= set(drawn)
    assert "throughput/samples_per_s" in caplog.text and "eval/return" in caplog.text
    assert plots._series(_rows(), "eval/return") == [(0, 3.4)]


def test_curves_with_nothing_finite_write_nothing(tmp_path):
    path = tmp_path / "curves.png"
    assert plots.plot_curves([{"step": 1, "eval/return": math.nan}], path) == []
    assert not path.exists()


def _events(n):
    """`n` phases over 4 (group, rank) rows, like a colocated embodied run's timeline."""
    t0 = 1.795e9
    ev = [{"group": "controller", "rank": 0, "name": "start_workers", "start": t0, "end": t0 + 62.7}]
    for i in range(n):
        group, name = [("env", "step"), ("rollout", "act"), ("actor", "update"), ("controller", "step")][i % 4]
        start = t0 + 63 + i * 0.02
        ev.append({"group": group, "rank": 0, "name": name, "start": start, "end": start + 0.015})
    return ev


def test_timeline_draws_many_phases_and_skips_broken_events(tmp_path, caplog):
    ev = _events(4000)
    ev += [{"group": "env", "rank": 1, "name": "step", "start": 1.795e9 + 5, "end": math.nan},
           {"group": "env", "rank": 1, "name": "step", "start": 1.795e9 + 9, "end": 1.795e9 + 8},
           {"group": "env", "rank": 1, "name": "step", "start": None, "end": 1.795e9 + 8}]
    path = tmp_path / "timeline.png"
    with caplog.at_level(logging.WARNING, logger="rlinf.utils.plots"):
        plots.plot_timeline(ev, path, title="pushcube")
    assert _png(path)
    assert "3 of 4004 events" in caplog.text
    empty = tmp_path / "empty.png"
    plots.plot_timeline(ev[-3:], empty)
    assert not empty.exists()


def test_a_failing_plot_is_skipped_and_the_other_still_written(tmp_path, monkeypatch, caplog):
    run_dir = RunDir(tmp_path / "run", "env: {}\n", tensorboard=False)
    for row in _rows():
        run_dir.log_metrics(row.pop("step"), row)

    def broken(*args, **kwargs):
        raise ValueError("Invalid bounding box")

    monkeypatch.setattr(plots, "plot_timeline", broken)
    with caplog.at_level(logging.WARNING, logger="rlinf.utils.rundir"):
        run_dir.write_plots(_events(10))
    run_dir.close()
    assert _png(tmp_path / "run" / "plots" / "curves.png")
    assert not (tmp_path / "run" / "plots" / "timeline.png").exists()
    assert "timeline.png skipped: ValueError: Invalid bounding box" in caplog.text


def test_an_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    run_dir = RunDir(tmp_path / "run", "env: {}\n", tensorboard=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_curves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_dir.write_plots(())
    run_dir.close()
