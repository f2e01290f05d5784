"""Verifiable text tasks: procedural arithmetic, reasoning-gym generators, GSM8K-format JSONL."""

from rlinf.envs.text.tasks import TaskSplit, TextSample, load_task

__all__ = ["TaskSplit", "TextSample", "load_task"]
