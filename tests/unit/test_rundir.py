"""RunDir keeps a run's history: config.yaml is never rewritten, metric rows are moved, never deleted."""

import json

from rlinf.utils.rundir import RunDir, read_metrics


def _rows(*steps):
    return [{"step": s, "loss": float(s)} for s in steps]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_resume_moves_later_rows_to_a_side_file_and_keeps_config(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\n")
    _write(tmp_path / "metrics.jsonl", _rows(0, 1, 2, 3, 4))
    run_dir = RunDir(tmp_path, "a: 2\n", tensorboard=False, resume_step=2)
    run_dir.log_metrics(3, {"loss": 30.0})
    run_dir.close()
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "config.from-step-2.yaml").read_text() == "a: 2\n"
    assert read_metrics(tmp_path / "metrics.after-step-2.jsonl") == _rows(3, 4)
    assert read_metrics(tmp_path / "metrics.jsonl") == [*_rows(0, 1, 2), {"step": 3, "loss": 30.0}]


def test_second_resume_from_the_same_step_does_not_overwrite_the_first_side_file(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\n")
    _write(tmp_path / "metrics.jsonl", _rows(1, 2, 3))
    RunDir(tmp_path, "a: 1\n", tensorboard=False, resume_step=1).close()
    _write(tmp_path / "metrics.jsonl", _rows(1, 2, 5))
    RunDir(tmp_path, "a: 1\n", tensorboard=False, resume_step=1).close()
    assert read_metrics(tmp_path / "metrics.after-step-1.jsonl") == _rows(2, 3)
    assert read_metrics(tmp_path / "metrics.after-step-1.1.jsonl") == _rows(2, 5)
    assert not list(tmp_path.glob("config.from-step-*"))  # same config: nothing written beside it


def test_fresh_start_in_a_used_directory_sets_every_row_aside(tmp_path):
    _write(tmp_path / "metrics.jsonl", _rows(0, 1))
    RunDir(tmp_path, "a: 1\n", tensorboard=False).close()
    assert read_metrics(tmp_path / "metrics.earlier-run.jsonl") == _rows(0, 1)
    assert read_metrics(tmp_path / "metrics.jsonl") == []
