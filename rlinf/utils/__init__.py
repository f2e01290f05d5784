"""Run directory, metrics, timeline and logging helpers."""
