"""Run one tool call from the command line and print its JSON result (how users debug tools).

    python -m rlinf.tools run calculator --input expr.txt
    python -m rlinf.tools run python --input prog.py --limit wall_s=5 --limit memory_mb=256
    python -m rlinf.tools run retrieve --input query.txt --corpus docs.jsonl --k 3
    python -m rlinf.tools isolation        # which sandbox isolation this machine gives

The result is one JSON object on stdout: ok, output, error, elapsed, meta (for python: the sandbox's
isolation modes). Exit code 0 when the tool succeeded, 1 when it returned an error (the JSON says
which); bad input (unknown tool, missing file, bad option) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any, Dict, List, Optional

from rlinf.errors import InputError

from . import TOOLS, call
from .retrieve import load_index
from .sandbox import SandboxLimits, isolation


def _parse_limits(items: List[str]) -> Dict[str, Any]:
    fields = {f.name: f.type for f in dataclasses.fields(SandboxLimits)}
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise InputError(f"expected KEY=VALUE with KEY one of {', '.join(fields)}; got '{item}'", key="--limit")
        try:
            out[key] = float(value) if key == "wall_s" else int(value)
        except ValueError:
            raise InputError(f"'{value}' is not a number", key=f"--limit {key}") from None
        if out[key] <= 0:
            raise InputError(f"must be positive, got {value}", key=f"--limit {key}")
    return out


def _read_input(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}", key="--input") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input file {path}: {exc}", key="--input") from None


def _run(args: argparse.Namespace) -> int:
    TOOLS.get(args.tool)  # unknown tool -> ConfigError (an InputError)
    text = _read_input(args.input)
    options: Dict[str, Any] = {}
    name = args.tool
    if name in ("retrieve", "search"):
        if not args.corpus:
            raise InputError("the retrieve tool needs --corpus FILE", key="--corpus")
        load_index(args.corpus, args.field)  # a missing or unreadable corpus fails here, exit 2
        options.update(corpus=args.corpus, k=args.k, field=args.field)
    if name == "python":
        options["limits"] = _parse_limits(args.limit)
    elif args.limit:
        raise InputError("--limit applies to the python tool only", key="--limit")
    result = call(name, text, **options)
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0 if result.ok else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlinf.tools", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one tool call and print its JSON result")
    run.add_argument("tool", help=f"one of: {', '.join(TOOLS.names())}")
    run.add_argument("--input", required=True, help="file with the tool's input text ('-': stdin)")
    run.add_argument("--corpus", help="retrieve: corpus file (.jsonl with a text field, or one document a line)")
    run.add_argument("--field", default="text", help="retrieve: the text field of a .jsonl corpus")
    run.add_argument("--k", type=int, default=3, help="retrieve: how many documents")
    run.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                     help="python: a sandbox limit (cpu_s, memory_mb, max_procs, output_bytes, wall_s, file_mb)")
    sub.add_parser("isolation", help="print which sandbox isolation this machine gives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "isolation":
            print(json.dumps(isolation(), indent=2))
            return 0
        return _run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the command's one-line answer to its user, not a log record
        return 2


if __name__ == "__main__":
    sys.exit(main())
