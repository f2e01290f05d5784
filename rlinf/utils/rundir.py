"""The run directory: resolved config, per-step metrics, summary, timeline, TensorBoard events.

Created only after the config and placement validated, so bad input leaves nothing behind.
"""

import json
import logging
import math
import time
from pathlib import Path
from typing import Iterable, Optional

from rlinf.utils.timeline import write_timeline

logger = logging.getLogger(__name__)


def default_run_dir(config_name: str) -> Path:
    return Path("runs") / f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunDir:
    """Writes `config.yaml`, `metrics.jsonl`, `summary.json`, `timeline.json` and TensorBoard events."""

    def __init__(self, path: Path, config_yaml: str, tensorboard: bool = True, resume: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(config_yaml)
        self._metrics = open(self.path / "metrics.jsonl", "a" if resume else "w")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))

    @classmethod
    def create(cls, output_dir: Optional[str], config_name: str, config_yaml: str, tensorboard: bool = True,
               resume: bool = False) -> "RunDir":
        return cls(Path(output_dir) if output_dir else default_run_dir(config_name), config_yaml, tensorboard, resume)

    def log_metrics(self, step: int, metrics: dict) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def write_summary(self, summary: dict) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))

    def write_timeline(self, events: Iterable[dict]) -> None:
        write_timeline(self.path / "timeline.json", events)

    def close(self) -> None:
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list:
    """Rows of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
