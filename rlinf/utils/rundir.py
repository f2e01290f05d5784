"""The run directory: resolved config, per-step metrics, summary, timeline, TensorBoard events.

Created only after the config and placement validated, so bad input leaves nothing behind.
"""

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Iterable, List, Optional

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
        self._write_config(config_yaml, resume_step or 0)
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():  # a fresh start in a used directory sets every earlier row aside
            self._set_aside_rows_after(metrics, resume_step if resume_step is not None else -1)
        self._metrics = open(metrics, "a")
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

    def _write_config(self, config_yaml: str, start_step: int) -> None:
        """`config.yaml` is the first config this directory ran with and is never rewritten; a run that
        continues it (resume, restart) with another config writes `config.from-step-<N>.yaml` beside it."""
        original = self.path / "config.yaml"
        if not original.exists():
            original.write_text(config_yaml)
        elif original.read_text() != config_yaml:
            _unique(self.path / f"config.from-step-{start_step}.yaml").write_text(config_yaml)

    def _set_aside_rows_after(self, metrics: Path, step: int) -> None:
        """Rows logged after `step` are redone by this run: they move to `metrics.after-step-<N>.jsonl`
        (`metrics.earlier-run.jsonl` for a fresh start, step -1; nothing is deleted), and metrics.jsonl
        keeps the rows up to `step`."""
        rows = read_metrics(metrics)
        later = [r for r in rows if r["step"] > step]
        if not later:
            return
        side = _unique(self.path / (f"metrics.after-step-{step}.jsonl" if step >= 0 else "metrics.earlier-run.jsonl"))
        side.write_text("".join(json.dumps(r) + "\n" for r in later))
        kept = self.path / "metrics.jsonl.tmp"
        kept.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))
        os.replace(kept, metrics)
        logger.info("%d metric rows after step %d moved to %s", len(later), step, side)

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

    def record_devices(self, devices: List[dict], start_step: int) -> None:
        """Append the devices this (re)start of the run runs on - index, node id and address each - to
        `devices.json`, a list with one entry per start: a resumed run adds its own, nothing is rewritten."""
        path = self.path / "devices.json"
        starts = json.loads(path.read_text()) if path.exists() else []
        starts.append({"start_step": start_step, "devices": devices})
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(starts, indent=1))
        tmp.replace(path)

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


def _unique(path: Path) -> Path:
    """`path`, or `path` with `.1`, `.2`, ... before its suffix when that name is taken."""
    n = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        n += 1
    return candidate


def read_metrics(path: Path) -> list:
    """Rows of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
