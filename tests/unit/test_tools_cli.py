"""`python -m rlinf.tools run <tool> --input FILE`: prints the JSON result; bad input exits 2 with one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rlinf.tools", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_python_tool_prints_its_json_result(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text("print(sum(range(10)))\n")
    proc = _cli("run", "python", "--input", str(prog), "--limit", "wall_s=20")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["output"] == "45\n" and out["error"] is None
    assert out["elapsed"] > 0 and set(out["meta"]["isolation"]) == {"network", "filesystem", "processes", "user"}


def test_unknown_tool_exits_2_with_one_line(tmp_path):
    expr = tmp_path / "e.txt"
    expr.write_text("1+1")
    proc = _cli("run", "calculater", "--input", str(expr))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown tool 'calculater'" in lines[0] and "calculator" in lines[0], proc.stderr


def test_bad_input_exits_2_in_process(tmp_path, capsys):
    from rlinf.tools.__main__ import main

    expr = tmp_path / "e.txt"
    expr.write_text("1+1")
    cases = [
        (["run", "calculator", "--input", str(tmp_path / "missing.txt")], "input file not found"),
        (["run", "retrieve", "--input", str(expr), "--corpus", str(tmp_path / "none.jsonl")],
         "corpus file not found"),
        (["run", "retrieve", "--input", str(expr)], "needs --corpus"),
        (["run", "python", "--input", str(expr), "--limit", "wall=3"], "--limit"),
    ]
    for args, fragment in cases:
        assert main(args) == 2, args
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert out == "" and len(lines) == 1 and fragment in lines[0], err
    assert main(["run", "calculator", "--input", str(expr)]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == "2"
