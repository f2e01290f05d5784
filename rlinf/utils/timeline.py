"""Chrome-trace timeline (opens in Perfetto / chrome://tracing) from worker phase events.

An event is a dict with `group`, `rank`, `name`, `start`, `end` (seconds since the epoch), as
returned by `WorkerGroup.pop_events` or recorded by the controller itself (group 'controller').
Each group becomes a process row, each rank a thread row, so overlap between groups is visible.
"""

import json
from pathlib import Path
from typing import Iterable, List


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
    return {"traceEvents": trace, "displayTimeUnit": "ms"}


def write_timeline(path: Path, events: Iterable[dict]) -> None:
    Path(path).write_text(json.dumps(chrome_trace(events)))
