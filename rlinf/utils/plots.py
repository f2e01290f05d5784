"""PNG plots written at the end of a run: learning curves from metrics.jsonl and a Gantt chart of the
timeline (which phase ran when, per worker), so overlap between groups can be seen at a glance."""

import logging
import math
from pathlib import Path
from typing import Iterable, List, Sequence

logger = logging.getLogger(__name__)

# Fixed colours for the common phases, so pictures of different runs read the same way.
PHASE_COLORS = {"generate": "#2ca02c", "act": "#2ca02c", "update": "#d62728", "score": "#9467bd",
                "step": "#8c564b", "send_weights": "#ff7f0e", "recv_weights": "#ffbb78", "export_weights": "#ff7f0e",
                "load_weights": "#ffbb78", "publish_weights": "#1f77b4", "compute_values": "#e377c2",
                "evaluate": "#7f7f7f"}

CURVES = ("reward/mean", "reward/accuracy", "eval/accuracy", "eval/return", "eval/success_rate", "env/return",
          "env/success_rate", "actor/entropy", "critic/vf_loss", "throughput/samples_per_s", "staleness/max")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: Sequence[dict], key: str) -> list:
    """(step, value) points of `key`; NaN/inf values are dropped with a warning (they break axis limits)."""
    pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r.get("step"), (int, float))]
    good = [(s, v) for s, v in pts if _finite(v)]
    if len(good) < len(pts):
        logger.warning("plot: %d of %d points of %s are not finite numbers; left out", len(pts) - len(good),
                       len(pts), key)
    return good


def plot_curves(rows: Sequence[dict], path: Path, keys: Iterable[str] = CURVES) -> List[str]:
    """One subplot per metric of `keys` with at least one finite value in `rows`; returns the metrics drawn."""
    series = {k: _series(rows, k) for k in keys}
    present = [k for k, pts in series.items() if pts]
    if not present:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(len(present), 1, figsize=(7, 2.2 * len(present)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], present):
        pts = series[key]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if key.startswith("eval/") else None,
                markersize=3, linewidth=1)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return present


def plot_timeline(events: Sequence[dict], path: Path, title: str = "", window: tuple = ()) -> None:
    """Gantt chart: one row per (group, rank), one bar per phase; `window` = (t0, t1) seconds to zoom.

    Events without finite start/end or ending before they start are left out with a warning. The bars of
    one (row, phase) pair are drawn as one collection, so a long run (tens of thousands of phases) draws in
    well under a second instead of one patch per phase."""
    good = [e for e in events if _finite(e.get("start")) and _finite(e.get("end")) and e["end"] >= e["start"]]
    if len(good) < len(events):
        logger.warning("timeline plot: %d of %d events lack a finite start/end; left out",
                       len(events) - len(good), len(events))
    if not good:
        return
    plt = _pyplot()
    t0 = min(e["start"] for e in good)
    rows = sorted({(e["group"], e.get("rank", 0)) for e in good})
    row_of = {r: i for i, r in enumerate(rows)}
    bars: dict = {}
    for e in good:
        key = (row_of[(e["group"], e.get("rank", 0))], e["name"])
        bars.setdefault(key, []).append((e["start"] - t0, e["end"] - e["start"]))
    colors = {}
    palette = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    for (y, name), spans in bars.items():
        color = colors.setdefault(name, PHASE_COLORS.get(name, palette[len(colors) % len(palette)]))
        ax.broken_barh(spans, (y - 0.35, 0.7), facecolors=color)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    ax.set_xlim(*(window or (0.0, max(e["end"] for e in good) - t0 or 1.0)))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{g}[{r}]" for g, r in rows], fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
