"""PNG plots written at the end of a run: learning curves from metrics.jsonl and a Gantt chart of the
timeline (which phase ran when, per worker), so overlap between groups can be seen at a glance."""

import logging
from pathlib import Path
from typing import Iterable, List, Sequence

logger = logging.getLogger(__name__)

# Fixed colours for the common phases, so pictures of different runs read the same way.
PHASE_COLORS = {"generate": "#2ca02c", "act": "#2ca02c", "update": "#d62728", "score": "#9467bd",
                "step": "#8c564b", "send_weights": "#ff7f0e", "recv_weights": "#ffbb78", "export_weights": "#ff7f0e",
                "load_weights": "#ffbb78", "publish_weights": "#1f77b4", "compute_values": "#e377c2",
                "evaluate": "#7f7f7f"}

CURVES = ("reward/mean", "reward/accuracy", "eval/accuracy", "eval/return", "env/return", "env/success_rate",
          "actor/entropy", "critic/vf_loss", "throughput/samples_per_s", "staleness/max")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: Sequence[dict], path: Path, keys: Iterable[str] = CURVES) -> List[str]:
    """One subplot per metric present in `rows`; returns the metrics drawn."""
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(len(present), 1, figsize=(7, 2.2 * len(present)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], present):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
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
    """Gantt chart: one row per (group, rank), one bar per phase; `window` = (t0, t1) seconds to zoom."""
    if not events:
        return
    plt = _pyplot()
    t0 = min(e["start"] for e in events)
    rows = sorted({(e["group"], e.get("rank", 0)) for e in events})
    colors = {}
    palette = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    for e in events:
        y = rows.index((e["group"], e.get("rank", 0)))
        color = colors.setdefault(e["name"], PHASE_COLORS.get(e["name"], palette[len(colors) % len(palette)]))
        ax.barh(y, e["end"] - e["start"], left=e["start"] - t0, color=color, height=0.7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{g}[{r}]" for g, r in rows], fontsize=8)
    ax.invert_yaxis()
    if window:
        ax.set_xlim(*window)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
