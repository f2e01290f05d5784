"""Benchmarks: `python -m bench.<name>`; each prints `RESULT {json}` last and is written up in docs/BENCHMARKS.md."""
