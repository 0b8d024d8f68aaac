"""The HTML report of one result file: report.md's tables and every plot in one page, readable offline.

Like report.py it reads only the result file; the plots are the PNG files beside it, referenced
by relative paths, so the directory can be copied or opened from disk anywhere.
"""

import argparse
import html
import os
import re
import sys

from harness.analysis import results, stats
from harness.render import report

HTML_FILE = "report.html"
# The plots harness.render.plots draws, in reading order; any other PNG found beside them follows.
PLOTS = (("throughput.png", "Throughput per strategy (mean over runs; bar = stdev)"),
         ("latency_cdf.png", "Latency distribution (each line one run)"),
         ("timeline.png", "Successful requests per second over time"),
         ("workers.png", "Requests served per worker"))

STYLE = """
body { font: 15px/1.5 system-ui, "DejaVu Sans", sans-serif; color: #1d2330; max-width: 1200px;
  margin: 1.5rem auto; padding: 0 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #e2e5ea; }
.meta, .note { color: #6b7280; }
table { border-collapse: collapse; margin: .6rem 0 1rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e2e5ea; text-align: right; }
th { font-size: .85rem; color: #6b7280; }
th:first-child, td:first-child, .text { text-align: left; }
td { font-variant-numeric: tabular-nums; }
.failures { color: #b91c1c; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #e2e5ea; }
figcaption { color: #6b7280; }
"""

PHASE_COLUMNS = ("strategy", "kind", "runs", "requests", "ok", "errors", "throughput (req/s)",
                 "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "late")


def _e(value):
    return html.escape("" if value is None else str(value))


def _table(columns, rows, text_columns=()):
    """An HTML table; `text_columns` (indexes) are left-aligned like the first one."""
    cls = lambda i: ' class="text"' if i in text_columns else ""
    header = "".join("<th%s>%s</th>" % (cls(i), _e(c)) for i, c in enumerate(columns))
    out = ["<table>", "<thead><tr>%s</tr></thead>" % header, "<tbody>"]
    for row in rows:
        out.append("<tr>%s</tr>" % "".join("<td%s>%s</td>" % (cls(i), _e(v)) for i, v in enumerate(row)))
    out += ["</tbody>", "</table>"]
    return out


def _phase_rows(result, strategies, phase):
    rows = []
    for s in strategies:
        entry = result["strategies"][s]["phases"].get(phase)
        if not entry or not entry.get("runs"):
            reason = (entry or {}).get("skipped") or "not run"
            rows.append((s, "", 0, "", "", "", reason, "", "", "", "", "", ""))
            continue
        agg = entry["aggregate"]
        lat = agg["latency_ms"]
        errors = ", ".join("%s %d" % kv for kv in sorted(agg["errors"].items())) or "0"
        late = sum(r.get("late", 0) for r in entry["runs"]) if entry["kind"] != "closed" else "-"
        rows.append((s, entry["kind"], agg["runs"], agg["requests"], agg["ok"], errors,
                     report.fmt_spread(agg["throughput_rps"]), report.fmt_spread(lat["p50"]),
                     report.fmt_spread(lat["p90"]), report.fmt_spread(lat["p99"]),
                     report.fmt_spread(lat["max"]), report.fmt_spread(lat["mean"]), late))
    return rows


def _per_function(result, strategies, phase):
    """Latency per function, only for phases mixing several (as in report.md)."""
    runs_of = lambda s: result["strategies"][s]["phases"].get(phase, {}).get("runs", [])
    names = sorted({fn for s in strategies for r in runs_of(s) for fn in r.get("per_function", {})})
    if len(names) < 2:
        return []
    rows = []
    for fn in names:
        for s in strategies:
            runs = [r["per_function"][fn] for r in runs_of(s) if fn in r.get("per_function", {})]
            if runs:
                mean = lambda k: report.fmt_spread(stats.spread([r["latency_ms"][k] for r in runs]))
                rows.append((fn, s, sum(r["requests"] for r in runs), sum(r["ok"] for r in runs),
                             mean("p50"), mean("p99"), mean("max")))
    return (["<h3>Per function (mean over runs)</h3>"]
            + _table(("function", "strategy", "requests", "ok", "p50 ms", "p99 ms", "max ms"), rows, (1,)))


def _comparisons(result, phase):
    found = [c for c in report.compare(result) if c["phase"] == phase]
    if not found:
        return []
    out = ["<p>Comparison over repeats (Welch's t-test, 5% level):</p>", "<ul>"]
    for c in found:
        # report.verdict speaks Markdown (**word**); the page gets the same words in <strong>.
        verdict = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _e(report.verdict(c)))
        out.append("<li>%s, %s vs %s: %s vs %s: %s</li>" % (
            _e(c["metric"]), _e(c["a"]), _e(c["b"]), _e(report.fmt(c["mean_a"])), _e(report.fmt(c["mean_b"])), verdict))
    return out + ["</ul>"]


def _per_worker(result, strategies, phase):
    columns, rows = ["worker"], {}
    for s in strategies:
        columns.append(s)
        for r in result["strategies"][s]["phases"].get(phase, {}).get("runs", []):
            for w, n in r.get("workers", {}).items():
                rows.setdefault(w, {}).setdefault(s, 0)
                rows[w][s] += n
    if not rows:
        return []
    ids = sorted(rows, key=lambda w: (0, int(w), w) if w.lstrip("-").isdigit() else (1, 0, w))
    table = [[w] + [rows[w].get(s, 0) for s in strategies] for w in ids]
    return ["<h3>Requests per worker (all runs)</h3>"] + _table(columns, table)


def _plots(directory):
    """Figures for the known plots, then any other PNG in `directory`; a missing plot is said."""
    out = ["<h2>Plots</h2>"]
    known = {name for name, _ in PLOTS}
    others = sorted(f for f in os.listdir(directory) if f.endswith(".png") and f not in known)
    for name, caption in list(PLOTS) + [(f, f) for f in others]:
        if os.path.exists(os.path.join(directory, name)):
            out.append('<figure><img src="%s" alt="%s"><figcaption>%s</figcaption></figure>'
                       % (_e(name), _e(caption), _e(caption)))
        else:
            out.append('<p class="note">%s: not drawn (<code>python -m harness.render result.json</code> '
                       "draws the plots).</p>" % _e(name))
    return out


def render(result, directory):
    """The page as a string; `directory` is where the plots are (and the page will be)."""
    sc, md = result["scenario"], result["metadata"]
    strategies = [s for s in sc["strategies"] if s in result["strategies"]]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>Scenario %s</title><style>%s</style></head><body>" % (_e(sc["name"]), STYLE),
           "<h1>Scenario <code>%s</code></h1>" % _e(sc["name"])]
    if sc.get("description"):
        out.append("<p>%s</p>" % _e(sc["description"]))
    out.append('<p class="meta">Workers: %s; strategies: %s; repeat: %s; file: <code>%s</code>.<br>'
               "Run on %s (%s cores, %s), Python %s, wasmtime %s, commit %s, %s.</p>" % tuple(map(_e, (
                   sc["workers"], ", ".join(sc["strategies"]), sc["repeat"], sc.get("file", "?"),
                   md.get("host"), md.get("cores"), md.get("platform"), md.get("python"), md.get("wasmtime"),
                   (md.get("git_commit") or "?")[:12], md.get("date")))))
    if not result.get("ok", True):
        out += ['<h2>Failures</h2>', '<ul class="failures">']
        out += ["<li>%s</li>" % _e(e[:500]) for e in result.get("errors", [])]
        out.append("</ul>")

    for phase in sc["phases"]:
        out.append('<h2 id="phase-%s">Phase <code>%s</code></h2>' % (_e(phase), _e(phase)))
        out += _table(PHASE_COLUMNS, _phase_rows(result, strategies, phase), (1, 5))
        out += _per_function(result, strategies, phase)
        out += _comparisons(result, phase)
        out += _per_worker(result, strategies, phase)

    cold = [(fn, s, report.fmt(c.get("latency_ms")), c.get("cold", "?"), report.fmt(c.get("init_ms")),
             "yes" if c.get("ok") else "no: %s" % c.get("kind"))
            for s in strategies for fn, c in sorted(result["strategies"][s].get("cold", {}).items())]
    out += ["<h2>First invocation after deploy (cold start)</h2>"]
    out += _table(("function", "strategy", "latency ms", "cold", "init ms", "ok"), cold, (1, 3, 5))
    deploys = [(fn, s, d.get("lang"), "yes" if d.get("ok") else "no", report.fmt(d.get("deploy_ms")),
                (d.get("error") or "")[:200])
               for s in strategies for fn, d in sorted(result["strategies"][s].get("deploy", {}).items())]
    out += ["<h2>Deploys</h2>"]
    out += _table(("function", "strategy", "lang", "ok", "deploy ms", "error"), deploys, (1, 2, 3, 5))
    out += _plots(directory)
    out.append("</body></html>\n")
    return "\n".join(out)


def write_html_report(result, out_dir):
    """Write out_dir/report.html for `result` (the plots are expected beside it); returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, HTML_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(result, out_dir))
    os.replace(tmp, path)
    return path


def main(argv=None):
    """Write report.html next to each given result file (draw the plots first with python -m harness.render)."""
    parser = argparse.ArgumentParser(prog="python -m harness.render.html_report", description=main.__doc__)
    parser.add_argument("files", nargs="+", metavar="RESULT.json")
    args = parser.parse_args(argv)
    loaded, status = results.load_each(args.files)
    for path, result in loaded:
        print(write_html_report(result, os.path.dirname(os.path.abspath(path))))
    return status


if __name__ == "__main__":
    sys.exit(main())
