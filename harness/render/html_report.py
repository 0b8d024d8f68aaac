"""The HTML report of one result file: report.md's every line and every plot, in one page that
reads offline as a single file (the plots are inlined as data: URIs).

The page is report.md turned into HTML (its headings, tables, lists, `code` and **bold**): it
cannot fall behind report.md, whatever report.py adds. Like report.py it reads only the result.
"""

import argparse
import base64
import html
import os
import re
import sys

from harness.analysis import results
from harness.render import report

HTML_FILE = "report.html"
# Captions of the plots harness.render.plots draws, in reading order; any other PNG found
# beside them follows under its file name.
PLOTS = (("sweep_latency.png", "Sweeps: p99 (solid) and p50 (dotted) against the offered rate, SLO dashed"),
         ("sweep_throughput.png", "Sweeps: achieved against offered rate (the diagonal is keeping up)"),
         ("throughput.png", "Throughput per strategy (mean over runs; bar = stdev)"),
         ("latency_ccdf.png", "Latency CCDF on log axes: the share of requests slower than x, one panel per strategy"),
         ("timeline.png", "Successful requests per second over time, one panel per strategy"),
         ("per_function_p99.png", "p99 latency per function with its 95% CI"),
         ("workers.png", "Requests served per worker"),
         ("workers_over_time.png", "The worker pool over time, phases end to end"))

STYLE = """
body { font: 15px/1.5 system-ui, "DejaVu Sans", sans-serif; color: #1d2330; max-width: 1200px;
  margin: 1.5rem auto; padding: 0 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #e2e5ea; }
.note { color: #6b7280; }
table { border-collapse: collapse; margin: .6rem 0 1rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e2e5ea; text-align: right; }
th { font-size: .85rem; color: #6b7280; }
th:first-child, td:first-child { text-align: left; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #e2e5ea; }
figcaption { color: #6b7280; }
"""


def inline(text):
    """Markdown's inline marks that report.md uses: `code` and **bold**, on escaped text."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append("<code>%s</code>" % html.escape(part[1:-1]))
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown(text):
    """report.md's Markdown as HTML lines: headings, pipe tables, "- " lists and paragraphs."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"^(#{1,4}) (.*)$", line)
        if heading:
            level = len(heading.group(1))
            out.append("<h%d>%s</h%d>" % (level, inline(heading.group(2)), level))
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            out += ["<table>", "<thead><tr>%s</tr></thead>" % "".join("<th>%s</th>" % inline(c) for c in _cells(line)),
                    "<tbody>"]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % inline(c) for c in _cells(lines[i])))
                i += 1
            out += ["</tbody>", "</table>"]
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append("<li>%s</li>" % inline(lines[i][2:]))
                i += 1
            out.append("</ul>")
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||- )", lines[i]):
                para.append(lines[i])
                i += 1
            out.append("<p>%s</p>" % inline(" ".join(para)))
        else:
            i += 1
    return out


def _plots(directory):
    """Every plot beside the page, inlined; a known plot that was not drawn is said."""
    out = ["<h2>Plots</h2>"]
    known = [name for name, _ in PLOTS]
    others = sorted(f for f in os.listdir(directory) if f.endswith(".png") and f not in known)
    for name, caption in list(PLOTS) + [(f, f) for f in others]:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            out.append('<figure id="%s"><img src="data:image/png;base64,%s" alt="%s"><figcaption>%s '
                       '(<code>%s</code>)</figcaption></figure>' % (html.escape(name), data, html.escape(caption),
                                                                    html.escape(caption), html.escape(name)))
        elif name in ("throughput.png", "latency_ccdf.png", "timeline.png", "workers.png"):
            out.append('<p class="note">%s: not drawn (<code>python -m harness.render result.json</code> '
                       "draws the plots).</p>" % html.escape(name))
    return out


def render(result, directory):
    """The page as a string; `directory` is where the plots are (their bytes go into the page)."""
    name = result["scenario"]["name"]
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>Scenario %s</title><style>%s</style></head><body>" % (html.escape(name), STYLE)]
    out += markdown(report.render(result))
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
