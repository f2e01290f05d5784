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

    def __init__(self, path: Path, config_yaml: str, tensorboard: bool = True, resume_step: Optional[int] = None,
                 wandb_mode: str = "disabled", wandb_project: str = "rlinf"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(config_yaml)
        metrics = self.path / "metrics.jsonl"
        if resume_step is not None and metrics.exists():
            # Rows after the checkpoint are redone by the resumed run: drop them.
            kept = [r for r in read_metrics(metrics) if r["step"] <= resume_step]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self._metrics = open(metrics, "a")
        else:
            self._metrics = open(metrics, "w")
        self._wandb = None
        if wandb_mode != "disabled":
            import wandb
            import yaml

            self._wandb = wandb.init(project=wandb_project, name=self.path.name, dir=str(self.path), mode=wandb_mode,
                                     config=yaml.safe_load(config_yaml), resume="allow" if resume_step else None)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))

    @classmethod
    def create(cls, output_dir: Optional[str], config_name: str, config_yaml: str, tensorboard: bool = True,
               resume_step: Optional[int] = None, wandb_mode: str = "disabled",
               wandb_project: str = "rlinf") -> "RunDir":
        return cls(Path(output_dir) if output_dir else default_run_dir(config_name), config_yaml, tensorboard,
                   resume_step, wandb_mode, wandb_project)

    def start_eval(self) -> Optional[dict]:
        """The step-0 evaluation recorded by the original run (for a resumed run's summary)."""
        for row in read_metrics(self.path / "metrics.jsonl"):
            if row["step"] == 0 and any(k.startswith("eval/") for k in row):
                return {k[len("eval/"):]: v for k, v in row.items() if k.startswith("eval/")}
        return None

    def log_metrics(self, step: int, metrics: dict) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        scalars = {k: v for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def write_summary(self, summary: dict) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))

    def write_timeline(self, events: Iterable[dict]) -> None:
        write_timeline(self.path / "timeline.json", events)

    def write_plots(self, events: Iterable[dict] = ()) -> None:
        """plots/curves.png from metrics.jsonl and plots/timeline.png from the phase events.

        A picture never fails a finished run: a plot that raises is skipped with a logged warning. (Seen:
        a second SIGTERM/SIGINT landing while Agg converts a clip box surfaces as matplotlib's
        `ValueError: Invalid bounding box` instead of KeyboardInterrupt.)"""
        from rlinf.utils.plots import plot_curves, plot_timeline

        out = self.path / "plots"
        out.mkdir(exist_ok=True)
        self._metrics.flush()
        plots = (("curves.png", lambda: plot_curves(read_metrics(self.path / "metrics.jsonl"), out / "curves.png")),
                 ("timeline.png", lambda: plot_timeline(list(events), out / "timeline.png", title=self.path.name)))
        for name, draw in plots:
            try:
                draw()
            except (ValueError, OverflowError, RuntimeError, OSError, TypeError, KeyError) as e:
                logger.warning("plot %s skipped: %s: %s", out / name, type(e).__name__, e)

    def close(self) -> None:
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list:
    """Rows of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
