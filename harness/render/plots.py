"""PNG plots of one result file (matplotlib, Agg backend: no display needed).

throughput per strategy, latency distribution (CDF), throughput over time, per-worker load;
one panel per phase in each figure. workers_over_time lays the phases end to end instead, so a
burst and the pool's answer to it read left to right.
"""

import logging
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

log = logging.getLogger(__name__)


def _strategies(result):
    return [s for s in result["scenario"]["strategies"] if s in result["strategies"]]


def _runs(result, strategy, phase):
    return result["strategies"][strategy]["phases"].get(phase, {}).get("runs", [])


def _figure(result, title):
    phases = result["scenario"]["phases"]
    # At most 4 panels a row, so a scenario with many phases stays readable.
    cols = min(4, len(phases))
    rows = -(-len(phases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(5.0, 4.5 * cols), 4.0 * rows), squeeze=False)
    fig.suptitle("%s: %s" % (result["scenario"]["name"], title))
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(phases):]:
        ax.set_visible(False)
    return fig, list(zip(phases, flat))


def _save(fig, directory, name):
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


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
        ax.bar(strategies, means, yerr=errs, capsize=4, color=["C%d" % i for i in range(len(strategies))])
        ax.set_title(phase)
        ax.set_ylabel("successful requests / s")
    return _save(fig, directory, "throughput.png")


def latency_cdf(result, directory):
    fig, panels = _figure(result, "latency distribution (each line one run)")
    for phase, ax in panels:
        for i, s in enumerate(_strategies(result)):
            for j, r in enumerate(_runs(result, s, phase)):
                q = r.get("latency_quantiles_ms") or []
                if q:
                    fractions = [k / (len(q) - 1) if len(q) > 1 else 1.0 for k in range(len(q))]
                    ax.plot(q, fractions, color="C%d" % i, alpha=0.8, label=s if j == 0 else None)
        ax.set_xscale("log")
        # Plain numbers on the major ticks only: log-scale minor labels overlap on narrow ranges.
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(phase)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, directory, "latency_cdf.png")


def timeline(result, directory):
    fig, panels = _figure(result, "successful requests per second over time")
    for phase, ax in panels:
        for i, s in enumerate(_strategies(result)):
            for j, r in enumerate(_runs(result, s, phase)):
                buckets = r.get("timeline", [])
                ax.plot([b["t"] for b in buckets], [b["ok"] for b in buckets], color="C%d" % i,
                        alpha=0.8, label=s if j == 0 else None)
        ax.set_xlabel("seconds since the phase started")
        ax.set_ylabel("ok / s")
        ax.set_title(phase)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, directory, "timeline.png")


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
    boundaries = None
    for i, s in enumerate(_strategies(result)):
        repeats = max((len(_runs(result, s, p)) for p in result["scenario"]["phases"]), default=0)
        for j in range(repeats):
            sequence, _ = _sequence(result, s, j)
            if boundaries is None:
                boundaries = [(offset, phase) for offset, phase, _ in sequence]
            label = (lambda text: text if j == 0 else None)
            color, alpha = "C%d" % i, 0.9 if j == 0 else 0.45
            pool = [(offset + p["t"], p) for offset, _, r in sequence for p in r.get("pool_timeline", [])]
            seconds = [(offset + b["t"] + 0.5, b) for offset, _, r in sequence for b in r.get("timeline", [])]
            pool_ax.step([t for t, _ in pool], [p["workers"] for _, p in pool], where="post", color=color,
                         alpha=alpha, label=label("%s workers" % s))
            pool_ax.plot([t for t, _ in pool], [p["busy"] for _, p in pool], color=color, alpha=alpha * 0.7,
                         linestyle=":", label=label("%s busy" % s))
            ok_ax.plot([t for t, _ in seconds], [b["ok"] for _, b in seconds], color=color, alpha=alpha,
                       label=label(s))
            tail = [(t, b["p99_ms"]) for t, b in seconds if b.get("p99_ms") is not None]
            p99_ax.plot([t for t, _ in tail], [v for _, v in tail], color=color, alpha=alpha, marker=".",
                        label=label(s))
    for offset, phase in boundaries or []:
        for ax in (pool_ax, ok_ax, p99_ax):
            ax.axvline(offset, color="0.6", linestyle="--", linewidth=0.8)
        pool_ax.annotate(phase, (offset, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                         textcoords="offset points", fontsize=8, color="0.35")
    pool_ax.set_ylabel("workers (dotted: busy)")
    pool_ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    pool_ax.set_ylim(bottom=0)
    ok_ax.set_ylabel("ok / s")
    p99_ax.set_ylabel("p99 latency per second (ms, log)")
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

    workers_over_time.png only when the result has a pool timeline (older files have none).
    """
    os.makedirs(directory, exist_ok=True)
    draws = [throughput, latency_cdf, timeline, workers]
    if has_pool_timeline(result):
        draws.append(workers_over_time)
    return [draw(result, directory) for draw in draws]
