"""Sweep phases: the figures of one step of rising load, and capacity at an SLO over the steps.

Pure functions over samples (anything with `fn`, `intended`, `sent`, `done`, `ok`, `kind` and
`latency_ms`), so the step and capacity rules are tested on synthetic data (tests/unit/test_stats.py).
The rules are those of ../shared/DESIGN.md, "Sweep phases: capacity at an SLO".
"""

from harness.analysis import stats

# A step is saturated when it served less than this share of what arrived in its window...
ACHIEVED_SHARE = 0.95
# ... or its p99 is over this many times the SLO.
SATURATED_SLO_FACTOR = 10.0
LATE_S = 0.010


def rates(spec):
    """The offered rates of a sweep: a list, or {start, factor, steps} (geometric)."""
    if isinstance(spec, dict):
        return [spec["start"] * spec["factor"] ** i for i in range(spec["steps"])]
    return [float(r) for r in spec]


def step_figures(samples, start, warmup, end, offered_rps, slo_p99_ms):
    """The figures of one step whose arrivals were scheduled in [start, end) (monotonic s).

    Requests that arrive in the first `warmup` seconds are not counted. `achieved_rps` is the
    successful completions per second in the measured window shifted by the median latency (so
    that, when the platform keeps up, it sees the completions of the very arrivals it is compared
    with, and a short step does not lose its last answers to the window's edge); it is compared
    with what arrived in the window (`arrival_rps`, the Poisson draw's actual rate, not the
    nominal one, so a draw that came out 5 % light is not taken for saturation). A platform that
    falls behind completes at most its capacity in any window, however it is shifted.
    """
    begin = start + warmup
    window = max(end - begin, 1e-9)
    measured = [s for s in samples if s.intended >= begin]
    ok = [s for s in measured if s.ok]
    errors = {}
    for s in measured:
        if not s.ok:
            errors[s.kind] = errors.get(s.kind, 0) + 1
    latency = stats.latency_summary([s.latency_ms for s in ok])
    shift = (latency["p50"] or 0.0) / 1000.0
    done_in_window = sum(1 for s in samples if s.ok and begin + shift <= s.done < end + shift)
    arrival_rps = len(measured) / window
    achieved = done_in_window / window
    per_function = {}
    for name in sorted({s.fn for s in measured}):
        mine = [s.latency_ms for s in ok if s.fn == name]
        per_function[name] = {"requests": sum(1 for s in measured if s.fn == name), "ok": len(mine),
                              "p99": stats.percentile(mine, 99)}
    p99 = latency["p99"]
    saturated = (achieved < ACHIEVED_SHARE * arrival_rps or p99 is None
                 or p99 > SATURATED_SLO_FACTOR * slo_p99_ms)
    return {
        "offered_rps": float(offered_rps),
        "arrival_rps": arrival_rps,
        "achieved_rps": achieved,
        "requests": len(measured),
        "ok": len(ok),
        "errors": errors,
        "late": sum(1 for s in measured if s.sent - s.intended > LATE_S),
        "latency_ms": latency,
        "p99_ci95": stats.quantile_ci([s.latency_ms for s in ok], 0.99),
        "per_function": per_function,
        "saturated": saturated,
        "met_slo": (not saturated) and p99 <= slo_p99_ms,
    }


def capacity(steps, slo_p99_ms):
    """Capacity at the SLO from steps in rising offered rate: {"capacity_rps", "bound"}.

    The highest offered rate whose step met the SLO, interpolated linearly on p99 between the
    last step that met it and the first that did not (steps after the first failure are not
    trusted: a lucky step past the knee is noise). `bound` says how to read the figure:
    "interpolated", "at_least" (every step met the SLO: the sweep did not reach the knee) or
    "below" (even the first step failed: 0, the capacity is under the lowest rate).
    """
    good = None
    for step in sorted(steps, key=lambda s: s["offered_rps"]):
        if step["met_slo"]:
            good = step
            continue
        if good is None:
            return {"capacity_rps": 0.0, "bound": "below"}
        low, high = good["latency_ms"]["p99"], step["latency_ms"]["p99"]
        rate = good["offered_rps"]
        if high is not None and high > slo_p99_ms > low:
            rate += (slo_p99_ms - low) / (high - low) * (step["offered_rps"] - good["offered_rps"])
        return {"capacity_rps": rate, "bound": "interpolated"}
    if good is None:
        return {"capacity_rps": None, "bound": None}
    return {"capacity_rps": good["offered_rps"], "bound": "at_least"}
