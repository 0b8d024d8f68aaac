"""Everything a person reads about one result, drawn again from its file: report.md, the plots
and report.html. `python -m harness.render RESULT.json ...` redraws old runs."""

import argparse
import os

from harness.analysis import results
from harness.render import calls, plots, report
from harness.render.html_report import write_html_report


def redraw(result, directory):
    """report.md, the plots and report.html of one loaded result; the paths written. A skipped
    scenario (its toolchains missing here) gets a report.md that says why, and nothing else."""
    if result.get("skipped"):
        return [write_skipped(result, directory)]
    return [report.write(result, directory), *plots.draw_all(result, directory), *calls.draw(result, directory),
            write_html_report(result, directory)]


def main(argv=None):
    """Redraw report.md, the plots and report.html next to each given result file."""
    parser = argparse.ArgumentParser(prog="python -m harness.render", description=main.__doc__)
    parser.add_argument("files", nargs="+", metavar="RESULT.json")
    args = parser.parse_args(argv)
    loaded, status = results.load_each(args.files)
    for path, result in loaded:
        for written in redraw(result, os.path.dirname(os.path.abspath(path))):
            print(written)
    return status


def write_skipped(result, directory):
    sc = result["scenario"]
    lines = ["# %s: skipped" % sc["name"], "", sc.get("description") or "", "",
             "This machine could not run this scenario, so nothing was measured (it is not a failure):", ""]
    lines += ["- %s" % reason for reason in result["skipped"]]
    lines += ["", "Install what is missing and run `minifaas bench %s` again." % sc.get("file", ""), ""]
    path = os.path.join(directory, report.REPORT_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
