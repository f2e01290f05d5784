"""Text tasks: procedural arithmetic, reasoning-gym generators, GSM8K-format JSONL, prompt and preference
files (jsonl / parquet / arrow), a synthetic preference task with a hidden gold scorer."""

from rlinf.envs.text.tasks import PREFERENCE_TASKS, PreferencePair, TaskSplit, TextSample, load_task

__all__ = ["PREFERENCE_TASKS", "PreferencePair", "TaskSplit", "TextSample", "load_task"]
