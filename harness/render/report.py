"""The Markdown report of one result file: comparison tables and whether differences are significant.

Reads only the result file, so `python -m harness.render results/X/result.json` redraws the
report and the plots of an old run without rerunning it.
"""

import itertools
import logging
import os

from harness.analysis import stats
from harness.render import calls

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
COMPARED = (("throughput_rps", None, "throughput (req/s)"),
            ("latency_ms", "p50", "p50 latency (ms)"),
            ("latency_ms", "p99", "p99 latency (ms)"))


def fmt(value, digits=1):
    return "n/a" if value is None else "%.*f" % (digits, value)


def fmt_spread(s, digits=1):
    """'mean ± stdev' over repeats, or the single value."""
    if s is None or s["mean"] is None:
        return "n/a"
    if s["stdev"] is None:
        return fmt(s["mean"], digits)
    return "%s ± %s" % (fmt(s["mean"], digits), fmt(s["stdev"], digits))


def run_values(phase, key, sub):
    return [(r.get(key) or {}).get(sub) if sub else r.get(key) for r in phase.get("runs", [])]


def compared(entries):
    """The metrics worth comparing in one phase, given its entries (one per column).

    Throughput only where it can differ: in a closed phase, or an open one where some run did
    not keep up (saturated); otherwise it is the offered rate and a "winner" is noise. A sweep
    compares capacity at the SLO only: a sweep run's latencies pool every step it reached, and
    runs stop at different steps (the first saturated one), so they measure different loads;
    nor do extra tests of them dilute the capacity test's Holm correction.
    """
    kinds = {e.get("kind") for e in entries}
    if kinds == {"sweep"}:
        return [("capacity_rps", None, CAPACITY)]
    saturated = any(r.get("saturated") for e in entries for r in e.get("runs", []))
    return [m for m in COMPARED if m[0] != "throughput_rps" or kinds == {"closed"} or saturated]


def _mix_functions(entries):
    """The functions whose p99 is compared: those every entry ran, in a mix of several (one
    function's tail is where strategies differ: short jobs behind long ones); none for a sweep."""
    if {e.get("kind") for e in entries} == {"sweep"}:
        return []
    functions = sorted(set.intersection(*(set(e["runs"][0].get("per_function", {})) for e in entries)))
    return functions if len(functions) > 1 else []


CAPACITY = "capacity at the SLO (req/s)"


def _holm(rows):
    """Holm's correction over a family of rows (each with a raw "p"): "p_holm" and "significant"."""
    adjusted, significant = stats.holm([r["p"] for r in rows])
    for r, p, sig in zip(rows, adjusted, significant):
        r["p_holm"], r["significant"] = p, sig
    return rows


def compare(result):
    """Every pair of strategies, every phase, every compared metric: means and Welch's test over
    repeats, Holm-corrected over all of them (the report's whole family of pairwise tests)."""
    out = []
    names = [s for s in result["scenario"]["strategies"] if s in result["strategies"]]
    phases = result["scenario"]["phases"]
    for phase in phases:
        for a, b in itertools.combinations(names, 2):
            pa = result["strategies"][a]["phases"].get(phase, {})
            pb = result["strategies"][b]["phases"].get(phase, {})
            if not pa.get("runs") or not pb.get("runs"):
                continue
            metrics = [(label, run_values(pa, key, sub), run_values(pb, key, sub))
                       for key, sub, label in compared([pa, pb])]
            for fn in _mix_functions([pa, pb]):
                metrics.append(("p99 latency of %s (ms)" % fn, _fn_p99(pa, fn), _fn_p99(pb, fn)))
            for label, va, vb in metrics:
                test = stats.welch(va, vb)
                out.append({"phase": phase, "a": a, "b": b, "metric": label,
                            "mean_a": stats.spread(va)["mean"], "mean_b": stats.spread(vb)["mean"],
                            "n_a": len(va), "n_b": len(vb), **test})
    return _holm(out)


def _fn_p99(phase, fn):
    return [r["per_function"][fn]["latency_ms"]["p99"] for r in phase["runs"]
            if r.get("per_function", {}).get(fn, {}).get("latency_ms", {}).get("p99") is not None]


def winners(result):
    """For every phase and metric: the best strategy, the runner-up, the margin and Welch's test
    between the two (over repeats). The leading question of a many-strategy scenario."""
    names = [s for s in result["scenario"]["strategies"] if s in result["strategies"]]
    out = []
    if len(names) < 2:
        return out
    for phase in result["scenario"]["phases"]:
        entries = {s: result["strategies"][s]["phases"].get(phase, {}) for s in names}
        entries = {s: e for s, e in entries.items() if e.get("runs")}
        if len(entries) < 2:
            continue
        metrics = [(label, key, sub) for key, sub, label in compared(list(entries.values()))]
        metrics += [("p99 latency of %s (ms)" % fn, "fn", fn) for fn in _mix_functions(list(entries.values()))]
        pools = [r.get("pool", {}).get("workers_mean") for e in entries.values() for r in e["runs"]]
        if None not in pools and len(set(pools)) > 1:   # fixed pools of one size cost the same
            metrics.append(("mean workers (cost)", "pool", "workers_mean"))
        for label, key, sub in metrics:
            values = {}
            for s, e in entries.items():
                if key == "fn":
                    values[s] = _fn_p99(e, sub)
                else:
                    values[s] = [v for v in run_values(e, key, sub) if v is not None]
            means = {s: stats.spread(v)["mean"] for s, v in values.items()}
            means = {s: m for s, m in means.items() if m is not None}   # no answer at all: nothing to rank
            if len(means) < 2:
                continue
            higher_is_better = _higher_is_better(label)
            ranked = sorted(means, key=means.get, reverse=higher_is_better)
            best, second = ranked[0], ranked[1]
            margin = abs(means[best] - means[second])
            out.append({"phase": phase, "metric": label, "best": best, "second": second,
                        "mean_best": means[best], "mean_second": means[second], "margin": margin,
                        "margin_pct": 100.0 * margin / abs(means[second]) if means[second] else None,
                        "n_best": len(values[best]), "n_second": len(values[second]),
                        **stats.welch(values[best], values[second])})
    return _holm(out)


def _higher_is_better(label):
    return label.startswith("throughput") or label == CAPACITY


def _who_wins(result):
    rows = winners(result)
    if not rows:
        return []
    lines = ["## Who wins", "",
             "For each phase and metric, the best strategy, its margin over the runner-up, and whether "
             "the repeats show that margin is not noise (Welch's t-test between the two over the "
             "per-run figures, Holm-corrected over the rows of this table, 5% family-wise level). "
             "Open phases compare no throughput unless a run could not keep up: it is the offered rate.", "",
             "| phase | metric | best | runner-up | margin | significant? |", "|---|---|---|---|---|---|"]
    for w in rows:
        if w["p"] is None:
            sig = "no test (%d run(s); set repeat >= 2)" % min(w["n_best"], w["n_second"])
        elif w["significant"]:
            sig = "**yes** (p = %.3g, Holm %.3g)" % (w["p"], w["p_holm"])
        else:
            sig = "no (p = %.3g, Holm %.3g): a tie as far as the runs show" % (w["p"], w["p_holm"])
        pct = "" if w["margin_pct"] is None else " (%.0f%%)" % w["margin_pct"]
        lines.append("| %s | %s | %s: %s | %s: %s | %s%s | %s |" % (
            w["phase"], w["metric"], w["best"], fmt(w["mean_best"]), w["second"], fmt(w["mean_second"]),
            fmt(w["margin"]), pct, sig))
    return lines + [""]


def verdict(c):
    if c["p"] is None:
        return "no test: %d run(s) each (set repeat >= 2)" % min(c["n_a"], c["n_b"])
    if c["significant"]:
        better = _better(c)
        return "**significant** (p = %.3g, Holm %.3g): %s is better" % (c["p"], c["p_holm"], better)
    return "not significant (p = %.3g, Holm %.3g): no difference shown" % (c["p"], c["p_holm"])


def _better(c):
    higher_is_better = _higher_is_better(c["metric"])
    a_higher = c["mean_a"] > c["mean_b"]
    return c["a"] if a_higher == higher_is_better else c["b"]


def render(result):
    sc = result["scenario"]
    md = result["metadata"]
    lines = ["# Scenario `%s`" % sc["name"], ""]
    if sc.get("description"):
        lines += [sc["description"], ""]
    # With [[stacks]] each stack has its own pool, listed under "Stacks compared".
    workers = "" if _stacks(result) else "Workers: %d; " % sc["workers"]
    lines += ["%sstrategies: %s; repeat: %d; file: `%s`." % (
        workers, ", ".join(sc["strategies"]), sc["repeat"], sc.get("file", "?")), "",
        "Run on %s (%s cores, %s), Python %s, wasmtime %s, commit %s, %s." % (
            md.get("host"), md.get("cores"), md.get("platform"), md.get("python"), md.get("wasmtime"),
            (md.get("git_commit") or "?")[:12], md.get("date")), ""]
    lines += _stacks(result)
    lines += calls.simulated_note(result)
    if not result.get("ok", True):
        lines += ["## Failures", ""]
        lines += ["- %s" % e.replace("\n", " ")[:500] for e in result.get("errors", [])]
        lines.append("")

    strategies = [s for s in sc["strategies"] if s in result["strategies"]]
    lines += _capacity(result, strategies)
    lines += _flags(result, strategies)
    lines += _who_wins(result)
    for phase in sc["phases"]:
        lines += ["## Phase `%s`" % phase, ""]
        lines += calls.phase_lead(result, strategies, phase)
        lines += ["| strategy | kind | runs | requests | ok | errors | throughput (req/s) | p50 ms | p90 ms "
                  "| p99 ms | max ms | mean ms | late | workers mean (max) | p99 95% CI |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in strategies:
            entry = result["strategies"][s]["phases"].get(phase)
            if not entry or not entry.get("runs"):
                reason = (entry or {}).get("skipped") or "not run"
                lines.append("| %s | | 0 | | | | %s | | | | | | | | |" % (s, reason))
                continue
            agg = entry["aggregate"]
            lat = agg["latency_ms"]
            errors = ", ".join("%s %d" % kv for kv in sorted(agg["errors"].items())) or "0"
            late = sum(r.get("late", 0) for r in entry["runs"]) if entry["kind"] != "closed" else "-"
            lines.append("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s, entry["kind"], agg["runs"], agg["requests"], agg["ok"], errors,
                fmt_spread(agg["throughput_rps"]), fmt_spread(lat["p50"]), fmt_spread(lat["p90"]),
                fmt_spread(lat["p99"]), fmt_spread(lat["max"]), fmt_spread(lat["mean"]), late,
                _pool_cell(entry["runs"]), fmt_ci(p99_ci(entry))))
        lines.append("")
        lines += _sweep_steps(result, strategies, phase)
        lines += _per_function(result, strategies, phase)
        comparisons = [c for c in compare(result) if c["phase"] == phase]
        if comparisons:
            lines += ["Comparison over repeats (Welch's t-test, Holm-corrected over every pair, "
                      "phase and metric of the report, 5% family-wise level):", ""]
            for c in comparisons:
                lines.append("- %s, %s vs %s: %s vs %s: %s" % (
                    c["metric"], c["a"], c["b"], fmt(c["mean_a"]), fmt(c["mean_b"]), verdict(c)))
            lines.append("")
        lines += calls.cold_section(result, strategies, phase)
        lines += _per_worker(result, strategies, phase)

    lines += ["## First invocation after deploy (cold start)", "",
              "| function | strategy | latency ms | cold | init ms | ok |", "|---|---|---|---|---|---|"]
    for s in strategies:
        for fn, cold in sorted(result["strategies"][s].get("cold", {}).items()):
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                fn, s, fmt(cold.get("latency_ms")), cold.get("cold", "?"), fmt(cold.get("init_ms")),
                "yes" if cold.get("ok") else "no: %s" % cold.get("kind")))
    lines.append("")
    lines += ["## Deploys", "", "| function | strategy | lang | ok | deploy ms | error |", "|---|---|---|---|---|---|"]
    for s in strategies:
        for fn, d in sorted(result["strategies"][s].get("deploy", {}).items()):
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                fn, s, d.get("lang"), "yes" if d.get("ok") else "no", fmt(d.get("deploy_ms")),
                (d.get("error") or "").replace("\n", " ").replace("|", "/")[:200]))
    plots = ["throughput.png", "latency_ccdf.png", "timeline.png", "workers.png", "per_function_p99.png"]
    if any(result["strategies"][s]["phases"].get(p, {}).get("kind") == "sweep"
           for s in strategies for p in sc["phases"]):
        plots = ["sweep_latency.png", "sweep_throughput.png"] + plots
    if any(r.get("pool_timeline") for s in strategies for e in result["strategies"][s]["phases"].values()
           for r in e.get("runs", [])):
        plots.append("workers_over_time.png")
    lines += ["", "Plots: %s." % ", ".join("`%s`" % p for p in plots), ""]
    return "\n".join(lines)


def fmt_ci(ci, digits=1):
    """[low, high]; a bound below 0 is shown as 0 (latencies and rates are never negative)."""
    if not ci:
        return "n/a"
    return "[%s, %s]" % tuple("?" if v is None else fmt(max(v, 0.0), digits) for v in ci)


def p99_ci(entry):
    """A 95% CI of the phase's p99: over the runs (Student t) with two or more, else the one
    run's order-statistic interval over its requests."""
    agg = entry.get("aggregate", {})
    spread = agg.get("latency_ms", {}).get("p99") or {}
    if spread.get("ci95"):
        return spread["ci95"]
    runs = entry.get("runs", [])
    return runs[0].get("p99_ci95") if len(runs) == 1 else None


def _capacity(result, strategies):
    """The opening table: capacity at the SLO per sweep phase and column, and one verdict a phase."""
    sweeps = [p for p in result["scenario"]["phases"]
              if any(result["strategies"][s]["phases"].get(p, {}).get("kind") == "sweep" for s in strategies)]
    if not sweeps:
        return []
    lines = ["## Capacity at the SLO", "",
             "The highest offered rate whose step kept p99 under the SLO and kept up with its arrivals, "
             "interpolated between the last step that did and the first that did not "
             "(mean ± stdev over the runs, 95% CI by Student t over the runs).", "",
             "| phase | strategy | SLO p99 ms | capacity (req/s) | 95% CI | runs | read as |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    wins = {w["phase"]: w for w in winners(result) if w["metric"] == CAPACITY}
    for phase in sweeps:
        for s in strategies:
            entry = result["strategies"][s]["phases"].get(phase, {})
            if not entry.get("runs"):
                lines.append("| %s | %s | | %s | | 0 | |" % (phase, s, entry.get("skipped") or "not run"))
                continue
            agg = entry["aggregate"]
            bounds = {r.get("capacity_bound") for r in entry["runs"]}
            read = "; ".join(BOUNDS[b] for b in sorted(b for b in bounds if b))
            lines.append("| %s | %s | %s | %s | %s | %d | %s |" % (
                phase, s, fmt(entry["runs"][0].get("slo_p99_ms"), 0), fmt_spread(agg["capacity_rps"]),
                fmt_ci(agg["capacity_rps"]["ci95"]), agg["runs"], read))
        verdicts.append(_capacity_verdict(phase, wins.get(phase)))
    return lines + [""] + verdicts + [""]


BOUNDS = {"interpolated": "interpolated", "at_least": "at least (every step met the SLO)",
          "below": "below the lowest rate"}


def _capacity_verdict(phase, w):
    if w is None:
        return "- `%s`: one column only, nothing to compare." % phase
    head = "- `%s`: **%s** reaches %s req/s, %s %s" % (
        phase, w["best"], fmt(w["mean_best"]), w["second"], fmt(w["mean_second"]))
    if w["margin_pct"] is not None:
        head += " (+%.0f%%)" % w["margin_pct"]
    if w["p"] is None:
        return head + "; no test (%d run(s); set repeat >= 2)." % min(w["n_best"], w["n_second"])
    if w["significant"]:
        return head + ": the repeats show it (Welch p = %.3g, Holm %.3g)." % (w["p"], w["p_holm"])
    return head + ": not shown by the repeats (Welch p = %.3g, Holm %.3g), a tie as far as they go." % (
        w["p"], w["p_holm"])


def _flags(result, strategies):
    """Runs to read with care: the injector was the limit, or the machine was busy or stolen from."""
    lines = []
    for s in strategies:
        for phase, entry in result["strategies"][s]["phases"].items():
            for i, r in enumerate(entry.get("runs", [])):
                reasons = (r.get("injector") or {}).get("limited", []) + (r.get("host") or {}).get("flags", [])
                if reasons:
                    lines.append("| %s | %s | %d | %s |" % (s, phase, r.get("repeat", i) + 1, "; ".join(reasons)))
    if not lines:
        return []
    return ["## Runs to read with care", "",
            "Runs where the injector may have been the limit (over 50% of a core, or over 1% of its "
            "requests sent late), or the machine was busy with something else just before the run, "
            "or the hypervisor stole CPU time during it. The balanced run order spreads such drift "
            "over every column; these rows say where it happened.", "",
            "| strategy | phase | run | why |", "|---|---|---|---|"] + lines + [""]


def _sweep_steps(result, strategies, phase):
    """The steps of a sweep per column: offered, achieved, p50 and p99 over the runs."""
    lines = []
    for s in strategies:
        entry = result["strategies"][s]["phases"].get(phase, {})
        steps = entry.get("aggregate", {}).get("steps")
        if not steps:
            continue
        if not lines:
            lines = ["Steps of the sweep (mean ± stdev over the runs that reached the step):", "",
                     "| strategy | offered req/s | runs | achieved req/s | p50 ms | p99 ms | saturated runs |",
                     "|---|---|---|---|---|---|---|"]
        for step in steps:
            lines.append("| %s | %s | %d | %s | %s | %s | %d |" % (
                s, fmt(step["offered_rps"]), step["runs"], fmt_spread(step["achieved_rps"]),
                fmt_spread(step["p50"]), fmt_spread(step["p99"]), step["saturated"]))
    return lines + [""] if lines else []


def _pool_cell(runs):
    """Workers able to take a job, averaged over the phase (and its max): the pool's cost."""
    pools = [r["pool"] for r in runs if r.get("pool", {}).get("workers_mean") is not None]
    if not pools:
        return "-"
    return "%s (%d)" % (fmt(sum(p["workers_mean"] for p in pools) / len(pools)),
                        max(p["workers_max"] for p in pools))


def _stacks(result):
    """One line per STRATEGY@label: how its stack was started."""
    stacks = result["scenario"].get("stacks") or {}
    if not any(v.get("label") for v in stacks.values()):
        return []
    lines = ["Stacks compared:", ""]
    for key in result["scenario"]["strategies"]:
        spec = stacks.get(key, {})
        options = ", ".join("%s %s" % (k, ",".join(map(str, v)) if isinstance(v, list) else v)
                            for k, v in sorted(spec.items()) if k not in ("label", "strategy"))
        lines.append("- `%s`: strategy %s, %s" % (key, spec.get("strategy", "?"), options))
    return lines + [""]


def _per_function(result, strategies, phase):
    """Latency per function, for phases mixing several: where FIFO and RR differ most."""
    names = set()
    for s in strategies:
        for r in result["strategies"][s]["phases"].get(phase, {}).get("runs", []):
            names.update(r.get("per_function", {}))
    if len(names) < 2:
        return []
    lines = ["Per function (mean over runs):", "",
             "| function | strategy | requests | ok | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for fn in sorted(names):
        for s in strategies:
            runs = [r["per_function"][fn] for r in result["strategies"][s]["phases"].get(phase, {}).get("runs", [])
                    if fn in r.get("per_function", {})]
            if not runs:
                continue
            mean = lambda k: stats.spread([r["latency_ms"][k] for r in runs])
            lines.append("| %s | %s | %d | %d | %s | %s | %s |" % (
                fn, s, sum(r["requests"] for r in runs), sum(r["ok"] for r in runs),
                fmt_spread(mean("p50")), fmt_spread(mean("p99")), fmt_spread(mean("max"))))
    return lines + [""]


def _per_worker(result, strategies, phase):
    lines = []
    for s in strategies:
        counts = {}
        for r in result["strategies"][s]["phases"].get(phase, {}).get("runs", []):
            for w, n in r.get("workers", {}).items():
                counts[w] = counts.get(w, 0) + n
        if counts:
            lines.append("Per-worker load, %s: %s" % (s, ", ".join(
                "worker %s: %d" % (w, counts[w]) for w in sorted(counts, key=_worker_key))))
    return lines + [""] if lines else []


def _worker_key(w):
    return (0, int(w), w) if w.lstrip("-").isdigit() else (1, 0, w)


def write(result, directory):
    path = os.path.join(directory, REPORT_FILE)
    with open(path, "w") as f:
        f.write(render(result))
    return path
