"""Invocation traces: read a trace file into a time-ordered schedule the runner can replay.

Format `azure2021` (Azure Functions 2021 trace, as sampled by vHive's InVitro):
`app,func,end_timestamp,duration` in seconds, one row per invocation; start = end - duration.
"""

import csv
import dataclasses
import hashlib


@dataclasses.dataclass(frozen=True, order=True)
class Invocation:
    at: float          # seconds from the first start, in trace time
    func: str          # the trace's function identity (app/func)
    duration: float    # seconds the invocation ran in the trace


def read(path, fmt="azure2021"):
    if fmt != "azure2021":
        raise ValueError("unknown trace format %r" % fmt)
    return read_azure2021(path)


def read_azure2021(path):
    """The trace's invocations sorted by start time, `at` counted from the earliest start."""
    rows = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                end, duration = float(row["end_timestamp"]), float(row["duration"])
                func = "%s/%s" % (row["app"], row["func"])
            except (KeyError, TypeError, ValueError):
                raise ValueError("%s:%d: expected app,func,end_timestamp,duration" % (path, line)) from None
            rows.append((end - duration, func, duration))
    if not rows:
        return []
    first = min(start for start, _, _ in rows)
    return sorted(Invocation(at=start - first, func=func, duration=duration) for start, func, duration in rows)


def map_function(trace_func, names):
    """The scenario function standing for a trace function: stable by hash, whatever the run."""
    digest = hashlib.sha256(trace_func.encode()).digest()
    return names[int.from_bytes(digest[:8], "big") % len(names)]


def schedule(invocations, names, speedup=1.0, limit=None):
    """(wall-clock offset s, function name, trace duration s) for each invocation, time-compressed."""
    chosen = invocations[:limit] if limit else invocations
    return [(inv.at / speedup, map_function(inv.func, names), inv.duration) for inv in chosen]
