"""Report sections and a plot about calls rather than requests: slowdown (leading trace and
open phases), cold starts per function and over time, and the model's predictions beside the
measured figures, naming those that differ by more than 20 % (docs/MODELS.md)."""

import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

GAP = 0.20            # a prediction this far from the measurement is named in the report
TOP_TRACE_FUNCTIONS = 10
COLD_PLOT = "cold_starts.png"


def _fmt(value, digits=1):
    return "n/a" if value is None else "%.*f" % (digits, value)


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _runs(result, strategy, phase):
    return result["strategies"][strategy]["phases"].get(phase, {}).get("runs", [])


def simulated_note(result):
    """The line that says a result comes from the model, not from a stack."""
    if not result.get("simulated"):
        return []
    service = result.get("model", {}).get("service", {})
    sources = ", ".join("%s: %s" % (fn, src or "from the trace") for fn, src in sorted(service.items()))
    return ["**Simulated** by the model (harness/analysis/model.py, docs/MODELS.md): no stack ran, "
            "the strategies' own classes chose the workers. Service times: %s." % (sources or "n/a"), ""]


def phase_lead(result, strategies, phase):
    """What a phase's section opens with: slowdown for trace and open phases (and the trace
    functions with the most calls), then predicted beside measured when the phase has both."""
    return _slowdown(result, strategies, phase) + _predictions(result, strategies, phase)


def _slowdown(result, strategies, phase):
    rows = []
    for s in strategies:
        runs = [r for r in _runs(result, s, phase) if (r.get("slowdown") or {}).get("n")]
        if runs:
            rows.append((s, runs))
    kind = next((result["strategies"][s]["phases"][phase]["kind"] for s, _ in rows), None)
    if not rows or kind not in ("trace", "open"):
        return []
    lines = ["Slowdown: latency / the call's own execution time (1 = no time lost), mean over runs:", "",
             "| strategy | calls | slowdown p50 | p99 | mean | cold rate |", "|---|---|---|---|---|---|"]
    for s, runs in rows:
        rate = _mean([(r.get("cold") or {}).get("rate") for r in runs])
        lines.append("| %s | %d | %s | %s | %s | %s |" % (
            s, sum(r["slowdown"]["n"] for r in runs), _fmt(_mean([r["slowdown"]["p50"] for r in runs]), 2),
            _fmt(_mean([r["slowdown"]["p99"] for r in runs]), 2), _fmt(_mean([r["slowdown"]["mean"] for r in runs]), 2),
            "n/a" if rate is None else "%.1f%%" % (100 * rate)))
    lines.append("")
    if kind == "trace":
        lines += _trace_functions(rows)
    return lines


def _trace_functions(rows):
    calls = {}
    for _, runs in rows:
        for r in runs:
            for f, fig in (r.get("per_trace_function") or {}).items():
                calls[f] = calls.get(f, 0) + fig["invocations"]
    if not calls:
        return []
    top = sorted(calls, key=lambda f: (-calls[f], f))[:TOP_TRACE_FUNCTIONS]
    names = [s for s, _ in rows]
    lines = ["Trace functions with the most calls (of %d): slowdown p50 / p99 / mean per strategy:" % len(calls), "",
             "| trace function | calls | %s |" % " | ".join(names), "|---|---|%s" % ("---|" * len(names))]
    for f in top:
        cells = []
        for _, runs in rows:
            figs = [r["per_trace_function"][f]["slowdown"] for r in runs if f in (r.get("per_trace_function") or {})]
            cells.append("%s / %s / %s" % tuple(_fmt(_mean([x[k] for x in figs]), 2) for k in ("p50", "p99", "mean")))
        lines.append("| %s | %d | %s |" % (f, calls[f] // max(len(rows), 1), " | ".join(cells)))
    return lines + [""]


def gaps(result, strategies, phase):
    """(strategy, figure, measured, predicted, relative gap) for each predicted figure."""
    out = []
    for s in strategies:
        runs = [r for r in _runs(result, s, phase) if "predicted" in r and "error" not in r["predicted"]]
        if not runs:
            continue
        pairs = [("p50 latency (ms)", lambda r: r["latency_ms"]["p50"], lambda p: p["latency_ms"]["p50"]),
                 ("p99 latency (ms)", lambda r: r["latency_ms"]["p99"], lambda p: p["latency_ms"]["p99"]),
                 ("throughput (req/s)", lambda r: r["throughput_rps"], lambda p: p["throughput_rps"]),
                 ("slowdown p50", lambda r: (r.get("slowdown") or {}).get("p50"), lambda p: p["slowdown"]["p50"]),
                 ("slowdown p99", lambda r: (r.get("slowdown") or {}).get("p99"), lambda p: p["slowdown"]["p99"])]
        if any("capacity_rps" in r for r in runs):
            pairs.append(("capacity (req/s)", lambda r: r.get("capacity_rps"), lambda p: p.get("capacity_rps")))
        for label, measured_of, predicted_of in pairs:
            measured = _mean([measured_of(r) for r in runs])
            predicted = _mean([predicted_of(r["predicted"]) for r in runs])
            gap = (predicted - measured) / measured if measured and predicted is not None else None
            out.append((s, label, measured, predicted, gap))
    return out


def _predictions(result, strategies, phase):
    rows = gaps(result, strategies, phase)
    if not rows:
        return []
    lines = ["Measured beside the model's prediction (same arrivals, the strategy's own class, service "
             "times from the run's own exec_ms; docs/MODELS.md):", "",
             "| strategy | figure | measured | predicted | gap |", "|---|---|---|---|---|"]
    far = []
    for s, label, measured, predicted, gap in rows:
        cell = "n/a" if gap is None else "%+.0f%%" % (100 * gap)
        if gap is not None and abs(gap) > GAP:
            cell = "**%s**" % cell
            far.append("%s %s (measured %s, predicted %s)" % (s, label, _fmt(measured), _fmt(predicted)))
        lines.append("| %s | %s | %s | %s | %s |" % (s, label, _fmt(measured, 2), _fmt(predicted, 2), cell))
    lines.append("")
    if far:
        lines += ["Differ from the model by more than %d %%: %s. The platform's own overhead, or an "
                  "effect the model leaves out (CPU shared by the workers, the hops between processes)."
                  % (100 * GAP, "; ".join(far)), ""]
    else:
        lines += ["Every predicted figure is within %d %% of the measured one." % (100 * GAP), ""]
    return lines


def cold_section(result, strategies, phase):
    """Cold starts per function: how often a call found its function cold, and what it cost."""
    rows = []
    for s in strategies:
        runs = [r for r in _runs(result, s, phase) if (r.get("cold") or {}).get("calls")]
        fns = sorted({fn for r in runs for fn, f in r.get("per_function", {}).items() if f.get("cold_rate") is not None})
        for fn in fns:
            figs = [r["per_function"][fn] for r in runs if fn in r.get("per_function", {})]
            rows.append((fn, s, sum(f.get("invocations", 0) for f in figs), _mean([f.get("cold_rate") for f in figs])))
        if runs:
            init = _mean([r["cold"]["init_ms"]["cold"]["p50"] for r in runs])
            rows.append(("(all)", s, sum(r["cold"]["calls"] for r in runs), _mean([r["cold"]["rate"] for r in runs]), init))
    if not rows:
        return []
    lines = ["Cold starts (a call whose function was not warm in its worker; over time: `%s`):" % COLD_PLOT, "",
             "| function | strategy | calls | cold rate | init ms p50 of cold calls |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r[0] == "(all)", r[0], strategies.index(r[1]))):
        fn, s, calls, rate = row[:4]
        lines.append("| %s | %s | %d | %s | %s |" % (fn, s, calls, "n/a" if rate is None else "%.1f%%" % (100 * rate),
                                                     _fmt(row[4]) if len(row) > 4 else ""))
    return lines + [""]


def draw(result, directory):
    """cold_starts.png: the share of calls that were cold, second by second, per phase and
    strategy (the first run); nothing when no run says which calls were cold."""
    strategies = [s for s in result["scenario"]["strategies"] if s in result["strategies"]]
    phases = [p for p in result["scenario"]["phases"]
              if any((r.get("cold") or {}).get("calls") for s in strategies for r in _runs(result, s, p))]
    if not phases:
        return []
    cols = min(4, len(phases))
    rows = -(-len(phases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 4.5 * cols), 3.6 * rows), squeeze=False)
    fig.suptitle("%s: cold starts over time" % result["scenario"]["name"])
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(phases):]:
        ax.set_visible(False)
    for phase, ax in zip(phases, flat):
        for i, s in enumerate(strategies):
            runs = [r for r in _runs(result, s, phase) if (r.get("cold") or {}).get("calls")]
            if not runs:
                continue
            buckets = [b for b in runs[0]["cold"]["timeline"] if b["calls"]]
            ax.plot([b["t"] for b in buckets], [100.0 * b["cold"] / b["calls"] for b in buckets],
                    label=s, color="C%d" % (i % 10), marker=".", linewidth=1)
        ax.set_title(phase)
        ax.set_xlabel("time in the phase (s)")
        ax.set_ylabel("cold calls (% of the second's calls)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize="small")
    path = os.path.join(directory, COLD_PLOT)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]
