"""Per-invocation figures of a phase, the same for measured and simulated calls: slowdown
(latency / execution time) per function and per trace function, and cold starts (rate per
function and over time, init, queue and exec times)."""

import math
import statistics

from harness.analysis import stats

# The trace has functions that ran in "0 ms": a slowdown divides by at least this much.
MIN_EXEC_MS = 1.0
COUNTS = ("all", "warm", "cold")


def slowdown(latency_ms, exec_ms):
    """How many times its own execution a call took, end to end (>= 1 when nothing is lost)."""
    return latency_ms / max(exec_ms, MIN_EXEC_MS)


def summary(values):
    """p50, p99 and mean of some values (None for each when there are none), and how many."""
    values = sorted(v for v in values if v is not None)
    return {"n": len(values), "p50": stats.percentile(values, 50), "p99": stats.percentile(values, 99),
            "mean": statistics.fmean(values) if values else None}


def select(calls, count="all"):
    """Only the warm calls, only the cold ones, or all (a phase's `count`); calls are dicts or
    Samples. A call whose answer does not say is neither warm nor cold: kept only with "all"."""
    if count == "all":
        return list(calls)
    want = count == "cold"
    cold = (lambda c: c.get("cold")) if calls and isinstance(calls[0], dict) else (lambda c: c.cold)
    return [c for c in calls if cold(c) is not None and bool(cold(c)) == want]


def records(samples, started, items=None, tags=None):
    """What `figures` reads, from the injector's Samples of one run.

    `items` (the schedule: (offset, name, ...)) and `tags` (one per item, e.g. the trace
    function each stands for) give each call its `trace_fn`: a Sample's intended time is
    started + its offset, computed the same way here, so the two meet exactly.
    """
    by_arrival = {}
    for item, tag in zip(items or (), tags or ()):
        by_arrival.setdefault((started + item[0], item[1]), []).append(tag)
    out = []
    for s in samples:
        mine = by_arrival.get((s.intended, s.fn))
        out.append({"fn": s.fn, "t": s.done - started, "ok": s.ok, "cold": s.cold,
                    "latency_ms": s.latency_ms, "exec_ms": getattr(s, "exec_ms", None),
                    "init_ms": getattr(s, "init_ms", None), "queue_ms": getattr(s, "queue_ms", None),
                    "trace_fn": mine.pop(0) if mine else None})
    return out


def figures(calls, duration_s=None):
    """Slowdown and cold-start figures of the ok calls of one run.

    `calls`: dicts with `fn` (scenario function), `t` (s from the phase start, at completion),
    `latency_ms`, `exec_ms`, and if known `cold`, `init_ms`, `queue_ms`, `trace_fn` (the trace
    function it stands for). A call without `exec_ms` has no slowdown.
    """
    calls = [c for c in calls if c.get("ok", True)]
    for c in calls:
        c["slowdown"] = slowdown(c["latency_ms"], c["exec_ms"]) if c.get("exec_ms") is not None else None
    out = {"slowdown": summary(c["slowdown"] for c in calls),
           "per_function": _groups(calls, "fn"),
           "cold": _cold(calls, duration_s)}
    for fn, q in exec_quantiles(calls).items():
        out["per_function"][fn]["exec_quantiles_ms"] = q
    if any(c.get("trace_fn") is not None for c in calls):
        out["per_trace_function"] = _groups(calls, "trace_fn")
    return out


def _groups(calls, key):
    groups = {}
    for c in calls:
        groups.setdefault(str(c.get(key)), []).append(c)
    return {name: {"invocations": len(mine), "slowdown": summary(c["slowdown"] for c in mine),
                   "cold_rate": _rate(mine)}
            for name, mine in sorted(groups.items())}


def exec_quantiles(calls, points=21):
    """{fn: quantiles of the exec_ms of its warm ok calls}: the service times a model draws from."""
    by_fn = {}
    for c in calls:
        if c.get("ok", True) and not c.get("cold") and c.get("exec_ms") is not None:
            by_fn.setdefault(c["fn"], []).append(c["exec_ms"])
    return {fn: stats.quantiles(values, points) for fn, values in sorted(by_fn.items())}


def _rate(calls):
    known = [c for c in calls if c.get("cold") is not None]
    return sum(bool(c["cold"]) for c in known) / len(known) if known else None


def _cold(calls, duration_s):
    known = [c for c in calls if c.get("cold") is not None]
    cold = [c for c in known if c["cold"]]
    warm = [c for c in known if not c["cold"]]
    seconds = max(1, math.ceil(max([duration_s or 0.0] + [c["t"] for c in calls]))) if calls else 0
    timeline = [{"t": t, "calls": 0, "cold": 0} for t in range(seconds)]
    for c in known:
        bucket = timeline[min(max(int(c["t"]), 0), seconds - 1)]
        bucket["calls"] += 1
        bucket["cold"] += bool(c["cold"])
    return {"calls": len(known), "cold": len(cold), "rate": len(cold) / len(known) if known else None,
            "init_ms": {"cold": summary(c.get("init_ms") for c in cold), "warm": summary(c.get("init_ms") for c in warm)},
            "queue_ms": summary(c.get("queue_ms") for c in known),
            "exec_ms": {"cold": summary(c.get("exec_ms") for c in cold), "warm": summary(c.get("exec_ms") for c in warm)},
            "timeline": timeline}


def merge_into(figures, extra):
    """`figures(...)` into a run's figures (injector.summarize's): per function beside the
    latency, the rest at the top."""
    for fn, mine in extra.pop("per_function").items():
        figures["per_function"].setdefault(fn, {}).update(mine)
    figures.update(extra)
    return figures
