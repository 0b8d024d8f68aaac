"""PNG plots of one result file (matplotlib, Agg backend: no display needed).

Sweeps: p99/p50 and achieved rate against the offered rate. Every phase: throughput per
strategy, latency CCDF on log axes and throughput over time (one panel per phase and strategy,
the other strategies in grey behind, so five strategies do not tangle), per-function p99 with
its CI, per-worker load. workers_over_time lays the phases end to end instead, so a burst and
the pool's answer to it read left to right.
"""

import logging
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

log = logging.getLogger(__name__)
GREY = "0.82"


def _strategies(result):
    return [s for s in result["scenario"]["strategies"] if s in result["strategies"]]


def _runs(result, strategy, phase):
    return result["strategies"][strategy]["phases"].get(phase, {}).get("runs", [])


def _kind(result, phase):
    for s in _strategies(result):
        kind = result["strategies"][s]["phases"].get(phase, {}).get("kind")
        if kind:
            return kind
    return None


def _color(result, strategy):
    return "C%d" % (_strategies(result).index(strategy) % 10)


def _figure(result, title, phases=None):
    phases = result["scenario"]["phases"] if phases is None else phases
    # At most 4 panels a row, so a scenario with many phases stays readable.
    cols = min(4, max(1, len(phases)))
    rows = -(-len(phases) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 4.5 * cols), 4.0 * rows), squeeze=False)
    fig.suptitle("%s: %s" % (result["scenario"]["name"], title))
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(phases):]:
        ax.set_visible(False)
    return fig, list(zip(phases, flat))


def _grid(result, title):
    """One row per phase, one column per strategy: [(phase, strategy, ax)]."""
    phases, strategies = result["scenario"]["phases"], _strategies(result)
    rows, cols = len(phases), max(1, len(strategies))
    width = min(3.6 * cols, 22.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.9 * rows + 0.6), squeeze=False)
    # Wrapped to the figure's width: two columns are narrower than the title.
    fig.suptitle(textwrap.fill("%s: %s" % (result["scenario"]["name"], title), int(width * 11)))
    return fig, [(p, s, axes[i][j]) for i, p in enumerate(phases) for j, s in enumerate(strategies)]


def _save(fig, directory, name):
    path = os.path.join(directory, name)
    # Room at the top for the figure's title (two lines at most), so the first panels' titles
    # are not drawn under it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plain_log(axis):
    # Plain numbers on the major ticks only: log-scale minor labels overlap on narrow ranges.
    axis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    # A range within one decade has no major tick: then the minor ones (2 and 5) are labelled.
    axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    # Minor ticks at 2 and 5 of each decade, not 2..9: as readable, and laying out a grid of
    # log-log panels took half the time with them (6 s for a 7-phase scenario's CCDFs).
    axis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))


def throughput(result, directory):
    fig, panels = _figure(result, "throughput (mean over runs, bar = stdev)")
    strategies = _strategies(result)
    for phase, ax in panels:
        means, errs = [], []
        for s in strategies:
            values = [r["throughput_rps"] for r in _runs(result, s, phase)]
            mean = sum(values) / len(values) if values else 0.0
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            means.append(mean)
            errs.append(sd)
        ax.bar(strategies, means, yerr=errs, capsize=4, color=[_color(result, s) for s in strategies])
        title = phase
        if _kind(result, phase) in ("open", "trace", "sweep"):
            title += " (open loop: mostly the offered rate)"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("successful requests / s")
        ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, directory, "throughput.png")


def ccdf_points(run):
    """(latencies, fractions slower) of one run: its latency_ccdf, or (version 1 files) its
    101 quantiles, which reach down to 1 %."""
    if run.get("latency_ccdf"):
        return [p[0] for p in run["latency_ccdf"]], [p[1] for p in run["latency_ccdf"]]
    q = run.get("latency_quantiles_ms") or []
    n = len(q) - 1
    return q[:-1], [1.0 - k / n for k in range(n)] if n > 0 else []


def latency_ccdf(result, directory):
    fig, panels = _grid(result, "latency CCDF: share of requests at least x ms (log-log; grey: other strategies)")
    for phase, strategy, ax in panels:
        for other in _strategies(result):
            for j, r in enumerate(_runs(result, other, phase)):
                x, y = ccdf_points(r)
                if not x:
                    continue
                if other == strategy:
                    ax.plot(x, y, color=_color(result, other), alpha=0.9, zorder=3, drawstyle="steps-post",
                            label="run %d" % (r.get("repeat", j) + 1))
                else:
                    ax.plot(x, y, color=GREY, alpha=0.9, zorder=1, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax.xaxis)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: "%g%%" % (100 * v)))
        ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
        ax.set_title("%s: %s" % (phase, strategy), fontsize=9, color=_color(result, strategy))
        ax.set_xlabel("latency (ms)", fontsize=8)
        ax.set_ylabel("requests slower", fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, directory, "latency_ccdf.png")


def _markers(ax, run):
    """A sweep's step starts as thin vertical lines."""
    for step in run.get("steps", [])[1:]:
        ax.axvline(step["t"], color="0.75", linewidth=0.6, linestyle=":")


def timeline(result, directory):
    fig, panels = _grid(result, "successful requests per second over time (whole buckets only)")
    for phase, strategy, ax in panels:
        runs = _runs(result, strategy, phase)
        for j, r in enumerate(runs):
            buckets = r.get("timeline", [])
            ax.plot([b["t"] + b.get("dt", 1.0) / 2 for b in buckets], [b["ok"] / b.get("dt", 1.0) for b in buckets],
                    color=_color(result, strategy), alpha=0.9 if j == 0 else 0.5, marker=".", markersize=3,
                    label="run %d" % (r.get("repeat", j) + 1))
            if j == 0:
                _markers(ax, r)
        ax.set_ylim(bottom=0)
        ax.set_title("%s: %s" % (phase, strategy), fontsize=9, color=_color(result, strategy))
        ax.set_xlabel("s since the phase started", fontsize=8)
        ax.set_ylabel("ok / s", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, directory, "timeline.png")


def _sweep_phases(result):
    return [p for p in result["scenario"]["phases"] if _kind(result, p) == "sweep"]


def _steps(result, strategy, phase):
    return result["strategies"][strategy]["phases"].get(phase, {}).get("aggregate", {}).get("steps", [])


def _errorbar(spread):
    """(mean, [below, above]) of a spread, its CI clipped at 0; no bar without a CI."""
    mean = spread.get("mean")
    ci = spread.get("ci95")
    if mean is None or not ci:
        return mean, [0.0, 0.0]
    return mean, [max(0.0, mean - max(ci[0], 0.0)), max(0.0, ci[1] - mean)]


def _predicted_steps(result, strategy, phase):
    """The model's steps (`model = true`), averaged over the runs: [(offered, p99, p50, achieved)]."""
    by_rate = {}
    for r in _runs(result, strategy, phase):
        for st in (r.get("predicted") or {}).get("steps", []):
            by_rate.setdefault(st["offered_rps"], []).append(st)
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    out = []
    for rate, found in sorted(by_rate.items()):
        p99 = mean([st["p99"] for st in found if st["p99"] is not None])
        p50 = mean([st["p50"] for st in found if st["p50"] is not None])
        out.append((rate, p99, p50, mean([st["achieved_rps"] for st in found])))
    return out


def sweep_latency(result, directory):
    phases = _sweep_phases(result)
    fig, panels = _figure(result, "p99 (bar: 95% CI) and p50 (dotted)", phases)
    for phase, ax in panels:
        slo = None
        for s in _strategies(result):
            steps = _steps(result, s, phase)
            runs = _runs(result, s, phase)
            slo = slo or (runs[0].get("slo_p99_ms") if runs else None)
            points = [(st["offered_rps"], _errorbar(st["p99"]), st["p50"]["mean"]) for st in steps
                      if st["p99"]["mean"] is not None]
            if not points:
                continue
            color = _color(result, s)
            ax.errorbar([x for x, _, _ in points], [m for _, (m, _), _ in points],
                        yerr=list(zip(*[e for _, (_, e), _ in points])), color=color, marker="o", capsize=3,
                        label="%s p99" % s)
            ax.plot([x for x, _, _ in points], [p for _, _, p in points], color=color, linestyle=":",
                    marker=".", label="%s p50" % s)
            model = [(x, p99) for x, p99, _, _ in _predicted_steps(result, s, phase) if p99]
            if model:
                ax.plot([x for x, _ in model], [y for _, y in model], color=color, linestyle="--",
                        marker="x", alpha=0.8, label="%s p99, model" % s)
        if slo:
            ax.axhline(slo, color="0.3", linestyle="--", linewidth=1, label="SLO p99 %g ms" % slo)
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(phase)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, directory, "sweep_latency.png")


def sweep_throughput(result, directory):
    phases = _sweep_phases(result)
    fig, panels = _figure(result, "achieved against offered rate", phases)
    for phase, ax in panels:
        top = 0.0
        for s in _strategies(result):
            steps = _steps(result, s, phase)
            if not steps:
                continue
            xs = [st["offered_rps"] for st in steps]
            bars = [_errorbar(st["achieved_rps"]) for st in steps]
            ax.errorbar(xs, [m for m, _ in bars], yerr=list(zip(*[e for _, e in bars])), color=_color(result, s),
                        marker="o", capsize=3, label=s)
            model = [(x, a) for x, _, _, a in _predicted_steps(result, s, phase) if a is not None]
            if model:
                ax.plot([x for x, _ in model], [y for _, y in model], color=_color(result, s), linestyle="--",
                        marker="x", alpha=0.8, label="%s, model" % s)
            top = max(top, max(xs))
        ax.plot([0, top], [0, top], color="0.5", linestyle="--", linewidth=1, label="achieved = offered")
        ax.set_xlabel("offered rate (req/s)")
        ax.set_ylabel("achieved rate (ok/s)")
        ax.set_title(phase)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, directory, "sweep_throughput.png")


def _function_p99(runs, fn):
    """(mean p99 of `fn` over the runs, [below, above]): the CI by Student t over two runs or
    more, else the one run's order-statistic interval."""
    values = [r["per_function"][fn]["latency_ms"]["p99"] for r in runs
              if fn in r.get("per_function", {}) and r["per_function"][fn]["latency_ms"]["p99"] is not None]
    if not values:
        return None, [0.0, 0.0]
    from harness.analysis import stats
    spread = stats.spread(values)
    if spread["ci95"] is None and len(runs) == 1:
        ci = runs[0]["per_function"][fn].get("p99_ci95")
        if ci and None not in ci:
            spread["ci95"] = ci
    return _errorbar(spread)


def has_functions(result):
    return any(r.get("per_function") for s in _strategies(result)
               for p in result["scenario"]["phases"] for r in _runs(result, s, p))


def per_function_p99(result, directory):
    fig, panels = _figure(result, "p99 latency per function (mean over runs, bar = 95% CI)")
    strategies = _strategies(result)
    for phase, ax in panels:
        functions = sorted({fn for s in strategies for r in _runs(result, s, phase) for fn in r.get("per_function", {})})
        width = 0.8 / max(1, len(strategies))
        for i, s in enumerate(strategies):
            bars = [_function_p99(_runs(result, s, phase), fn) for fn in functions]
            xs = [k + i * width for k, (m, _) in enumerate(bars) if m is not None]
            kept = [b for b in bars if b[0] is not None]
            if kept:
                ax.bar(xs, [m for m, _ in kept], width=width, yerr=list(zip(*[e for _, e in kept])), capsize=3,
                       color=_color(result, s), label=s)
        ax.set_xticks([k + width * (len(strategies) - 1) / 2 for k in range(len(functions))])
        ax.set_xticklabels(functions, fontsize=8, rotation=15)
        ax.set_ylabel("p99 (ms)")
        ax.set_title(phase)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, directory, "per_function_p99.png")


def workers(result, directory):
    fig, panels = _figure(result, "requests served per worker (all runs)")
    strategies = _strategies(result)
    for phase, ax in panels:
        counts = {}
        for s in strategies:
            for r in _runs(result, s, phase):
                for w, n in r.get("workers", {}).items():
                    counts.setdefault(w, {}).setdefault(s, 0)
                    counts[w][s] += n
        ids = sorted(counts, key=lambda w: (not w.isdigit(), int(w) if w.isdigit() else 0, w))
        width = 0.8 / max(1, len(strategies))
        for i, s in enumerate(strategies):
            ax.bar([k + i * width for k in range(len(ids))], [counts[w].get(s, 0) for w in ids],
                   width=width, label=s, color="C%d" % i)
        ax.set_xticks([k + width * (len(strategies) - 1) / 2 for k in range(len(ids))])
        ax.set_xticklabels(ids)
        ax.set_xlabel("worker")
        ax.set_ylabel("requests")
        ax.set_title(phase)
        ax.legend()
    return _save(fig, directory, "workers.png")


def _sequence(result, strategy, repeat_index):
    """The phases of one repeat laid end to end: [(offset s, phase name, run)] and the total length."""
    out, offset = [], 0.0
    for phase in result["scenario"]["phases"]:
        runs = _runs(result, strategy, phase)
        if repeat_index < len(runs):
            out.append((offset, phase, runs[repeat_index]))
            offset += runs[repeat_index]["duration_s"]
    return out, offset


def has_pool_timeline(result):
    return any(r.get("pool_timeline") for s in _strategies(result)
               for phase in result["scenario"]["phases"] for r in _runs(result, s, phase))


def workers_over_time(result, directory):
    """Worker count (and busy workers), ok/s and p99 per second, sharing one time axis."""
    fig, (pool_ax, ok_ax, p99_ax) = plt.subplots(3, 1, sharex=True, figsize=(10.0, 8.5))
    fig.suptitle("%s: the worker pool over time, phases end to end" % result["scenario"]["name"])
    boundaries = {}
    for i, s in enumerate(_strategies(result)):
        repeats = max((len(_runs(result, s, p)) for p in result["scenario"]["phases"]), default=0)
        for j in range(repeats):
            sequence, _ = _sequence(result, s, j)
            if j == 0:   # each stack's own phase boundaries: its phases do not last as long as another's
                boundaries[s] = [(offset, phase) for offset, phase, _ in sequence]
            label = (lambda text: text if j == 0 else None)
            color, alpha = "C%d" % i, 0.9 if j == 0 else 0.45
            pool = [(offset + p["t"], p) for offset, _, r in sequence for p in r.get("pool_timeline", [])]
            seconds = [(offset + b["t"] + b.get("dt", 1.0) / 2, b) for offset, _, r in sequence
                       for b in r.get("timeline", [])]
            pool_ax.step([t for t, _ in pool], [p["workers"] for _, p in pool], where="post", color=color,
                         alpha=alpha, label=label("%s workers" % s))
            pool_ax.plot([t for t, _ in pool], [p["busy"] for _, p in pool], color=color, alpha=alpha * 0.7,
                         linestyle=":", label=label("%s busy" % s))
            ok_ax.plot([t for t, _ in seconds], [b["ok"] / b.get("dt", 1.0) for _, b in seconds], color=color,
                       alpha=alpha, label=label(s))
            tail = [(t, b["p99_ms"]) for t, b in seconds if b.get("p99_ms") is not None]
            p99_ax.plot([t for t, _ in tail], [v for _, v in tail], color=color, alpha=alpha, marker=".",
                        label=label(s))
    for k, (s, marks) in enumerate(boundaries.items()):
        for offset, phase in marks:
            for ax in (pool_ax, ok_ax, p99_ax):
                ax.axvline(offset, color=_color(result, s), linestyle="--", linewidth=0.8, alpha=0.5)
            pool_ax.annotate(phase, (offset, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12 - 10 * k),
                             textcoords="offset points", fontsize=7, color=_color(result, s))
    pool_ax.set_ylabel("workers (dotted: busy)")
    pool_ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    pool_ax.set_ylim(bottom=0)
    ok_ax.set_ylabel("ok / s")
    p99_ax.set_ylabel("p99 latency per bucket (ms, log)")
    p99_ax.set_yscale("log")
    p99_ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    p99_ax.set_xlabel("seconds since the first phase started")
    for ax in (pool_ax, ok_ax, p99_ax):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    return _save(fig, directory, "workers_over_time.png")


def draw_all(result, directory):
    """Every plot for `result` into `directory`; returns the paths written.

    The sweep plots only for a result with a sweep phase; workers_over_time.png only when the
    result has a pool timeline (older files have none).
    """
    os.makedirs(directory, exist_ok=True)
    draws = [throughput, latency_ccdf, timeline, workers]
    if _sweep_phases(result):
        draws = [sweep_latency, sweep_throughput] + draws
    if has_functions(result):
        draws.append(per_function_p99)
    if has_pool_timeline(result):
        draws.append(workers_over_time)
    return [draw(result, directory) for draw in draws]
