"""Chrome-trace timeline (opens in Perfetto / chrome://tracing) from worker phase events.

An event is a dict with `group`, `rank`, `name`, `start`, `end` (seconds since the epoch), as
returned by `WorkerGroup.pop_events` or recorded by the controller itself (group 'controller').
Each group becomes a process row, each rank a thread row, so overlap between groups is visible.

`step_overhead` reads the controller's overhead off the events: the time inside each training step when no
worker group is busy (`python -m bench.controller`).
"""

import bisect
import json
import math
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple


def chrome_trace(events: Iterable[dict]) -> dict:
    events = list(events)
    t0 = min((e["start"] for e in events), default=0.0)
    pids: dict = {}
    trace: List[dict] = []
    for e in sorted(events, key=lambda e: e["start"]):
        pid = pids.setdefault(e["group"], len(pids) + 1)
        trace.append({
            "name": e["name"], "ph": "X", "pid": pid, "tid": int(e.get("rank", 0)),
            "ts": round((e["start"] - t0) * 1e6, 1), "dur": round(max(e["end"] - e["start"], 0.0) * 1e6, 1),
            "args": {k: v for k, v in e.items() if k not in ("name", "group", "rank", "start", "end")},
        })
    for group, pid in pids.items():
        trace.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": group}})
    # ts are microseconds since `origin_unix_s` (the first event's start), so other clocks can line up
    return {"traceEvents": trace, "displayTimeUnit": "ms", "otherData": {"origin_unix_s": t0}}


def write_timeline(path: Path, events: Iterable[dict]) -> None:
    Path(path).write_text(json.dumps(chrome_trace(events)))


def timeline_origin(path: Path) -> float:
    """The Unix time (seconds) that a `timeline.json`'s event times count from."""
    return float(json.loads(Path(path).read_text())["otherData"]["origin_unix_s"])


def read_timeline(path: Path) -> List[dict]:
    """The events of a `timeline.json` written by `write_timeline`, back as dicts with group, rank, name,
    start, end (seconds since the first event; other fields as written)."""
    trace = json.loads(Path(path).read_text())["traceEvents"]
    groups = {e["pid"]: e["args"]["name"] for e in trace if e.get("ph") == "M" and e.get("name") == "process_name"}
    return [{**e.get("args", {}), "group": groups.get(e["pid"], str(e["pid"])), "rank": e.get("tid", 0),
             "name": e["name"], "start": e["ts"] / 1e6, "end": (e["ts"] + e["dur"]) / 1e6}
            for e in trace if e.get("ph") == "X"]


# ---- controller overhead: time inside a step when no worker group is busy ---------------------------------

def merge_intervals(intervals: Iterable[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """The union of closed intervals as sorted, disjoint intervals (touching ones merge; empty ones drop)."""
    merged: List[List[float]] = []
    for start, end in sorted((a, b) for a, b in intervals if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def uncovered(merged: Sequence[Tuple[float, float]], lo: float, hi: float) -> List[Tuple[float, float]]:
    """The gaps of [lo, hi] not covered by `merged` (sorted, disjoint, from `merge_intervals`)."""
    gaps, cursor = [], lo
    for start, end in merged[bisect.bisect_right(merged, lo, key=lambda iv: iv[1]):]:  # those ending after lo
        if start >= hi:
            break
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < hi:
        gaps.append((cursor, hi))
    return gaps


def _is_worker(e: dict, controller: str) -> bool:
    return e["group"] != controller and math.isfinite(e["start"]) and math.isfinite(e["end"])


def step_overhead(events: Sequence[dict], step_name: str = "step", controller: str = "controller",
                  warmup: int = 1) -> List[dict]:
    """Per controller step phase (in time order, the first `warmup` left out): `wall_s` (the step phase),
    `busy_s` (the union of every worker event clipped to the step: at least one group at work), `idle_s`
    = wall - busy (the controller's overhead: its own work, dispatch and waiting on the runtime), `fraction`
    = idle / wall, `gaps` (the idle intervals), and `loop_s` / `loop_idle_s`: the same from this step's
    start to the next one's (what the loop does between steps included; None for the last step)."""
    busy = merge_intervals((e["start"], e["end"]) for e in events if _is_worker(e, controller))
    steps = sorted((e for e in events if e["group"] == controller and e["name"] == step_name),
                   key=lambda e: e["start"])
    rows = []
    for i, s in enumerate(steps):
        if i < warmup:
            continue
        gaps = uncovered(busy, s["start"], s["end"])
        wall = s["end"] - s["start"]
        idle = sum(b - a for a, b in gaps)
        row = {"index": i, "start": s["start"], "end": s["end"], "wall_s": wall, "busy_s": wall - idle,
               "idle_s": idle, "fraction": idle / wall if wall > 0 else 0.0, "gaps": gaps,
               "loop_s": None, "loop_idle_s": None}
        if i + 1 < len(steps):
            nxt = steps[i + 1]["start"]
            row["loop_s"] = nxt - s["start"]
            row["loop_idle_s"] = sum(b - a for a, b in uncovered(busy, s["start"], nxt))
        rows.append(row)
    return rows


def overhead_summary(rows: Sequence[dict]) -> Dict[str, float]:
    """Median and mean of the per-step fraction, the medians of step / busy / idle seconds, the pooled
    fraction (sum idle / sum wall) and the loop's pooled fraction (between-step time included)."""
    if not rows:
        return {"steps": 0}
    loops = [r for r in rows if r["loop_s"] is not None]
    return {
        "steps": len(rows),
        "median_fraction": statistics.median(r["fraction"] for r in rows),
        "mean_fraction": statistics.fmean(r["fraction"] for r in rows),
        "pooled_fraction": sum(r["idle_s"] for r in rows) / max(sum(r["wall_s"] for r in rows), 1e-12),
        "step_s": statistics.median(r["wall_s"] for r in rows),
        "busy_s": statistics.median(r["busy_s"] for r in rows),
        "idle_s": statistics.median(r["idle_s"] for r in rows),
        "loop_fraction": (sum(r["loop_idle_s"] for r in loops) / max(sum(r["loop_s"] for r in loops), 1e-12)
                          if loops else None),
    }


def idle_by_neighbours(events: Sequence[dict], rows: Sequence[dict], controller: str = "controller",
                       ) -> List[Tuple[str, str, int, float]]:
    """Where the idle time goes: every gap of `rows` named by the worker phase that ended last before it
    and the one that starts first after it ('group.name'; 'step start' / 'step end' for a gap at the
    step's edge). Returns (before, after, count, total seconds), largest total first."""
    workers = [e for e in events if _is_worker(e, controller)]
    by_end = sorted(workers, key=lambda e: e["end"])
    ends = [e["end"] for e in by_end]
    by_start = sorted(workers, key=lambda e: e["start"])
    starts = [e["start"] for e in by_start]
    totals: Dict[Tuple[str, str], List[float]] = {}
    for row in rows:
        for a, b in row["gaps"]:
            before, after = "step start", "step end"
            i = bisect.bisect_right(ends, a) - 1
            if a > row["start"] and i >= 0:
                before = f"{by_end[i]['group']}.{by_end[i]['name']}"
            j = bisect.bisect_left(starts, b)
            if b < row["end"] and j < len(starts):
                after = f"{by_start[j]['group']}.{by_start[j]['name']}"
            acc = totals.setdefault((before, after), [0, 0.0])
            acc[0] += 1
            acc[1] += b - a
    return sorted(((k[0], k[1], int(v[0]), v[1]) for k, v in totals.items()), key=lambda t: -t[3])
