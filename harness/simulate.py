"""`minifaas simulate SCENARIO.toml`: a scenario's phases through the model
(harness/analysis/model.py) instead of a stack, at any number of workers, in seconds.

The same arrivals as `minifaas bench` (the open loop's and each sweep step's seeded Poisson
schedule, the trace's replay, a closed loop's clients), the real strategy classes, and service times taken, for each function, from:

1. the trace itself, for a trace phase with `input_from_duration` (the milliseconds the call
   asks spin.c to run, exactly as the harness sends them; scaled per function to the measured
   mean exec_ms when a run measured it);
2. the execution times a bench run measured (`--measured RESULT.json`, or the run itself when
   a phase has `model = true`): each call draws from its function's measured exec_ms;
3. the function's `service_ms` in the scenario file.

A function with none of these cannot be simulated: the phase is recorded as skipped, saying so.
The result file has the format `minifaas bench` writes, marked `"simulated": true`; bench uses
`predict` to store a prediction beside each measured run of a `model = true` phase.
"""

import logging
import os
import random
import sys
import time

from harness.analysis import invocations, model, results, stats, sweep
from harness.load import injector, traces
from harness.render.redraw import redraw
from harness.run import runner, scenario

log = logging.getLogger(__name__)

DEFAULT_OUT = os.path.join("results", "simulated")
SIMULATED_KINDS = ("closed", "open", "trace", "sweep")


class NoServiceTime(Exception):
    """A function the model has no service time for; the message says how to give one."""


class ServiceTimes:
    """Each function's service time: draws from measured exec_ms quantiles, else its `service_ms`.
    `init_ms` is what a cold call adds (the first call after deploy, when measured)."""

    def __init__(self, functions, quantiles=None, init_ms=None):
        self.fixed = {f.name: f.service_ms for f in functions if f.service_ms is not None}
        self.quantiles = {fn: sorted(q) for fn, q in (quantiles or {}).items() if q}
        self.init_ms = dict(init_ms or {})

    @classmethod
    def from_runs(cls, functions, runs, cold=None):
        """From measured runs (their per_function exec_quantiles_ms) and cold first calls."""
        quantiles = {}
        for run in runs:
            for fn, figures in run.get("per_function", {}).items():
                quantiles.setdefault(fn, []).extend(figures.get("exec_quantiles_ms") or [])
        init = {fn: c["init_ms"] for fn, c in (cold or {}).items() if c.get("cold") and c.get("init_ms")}
        return cls(functions, quantiles, init)

    @classmethod
    def from_result(cls, functions, result):
        """Pooled over every strategy, phase and run of a bench result file."""
        runs = [r for s in result.get("strategies", {}).values() for p in s.get("phases", {}).values()
                for r in p.get("runs", [])]
        cold = {}
        for s in result.get("strategies", {}).values():
            cold.update(s.get("cold", {}))
        return cls.from_runs(functions, runs, cold)

    def source(self, fn):
        if fn in self.quantiles:
            return "measured exec_ms"
        if fn in self.fixed:
            return "service_ms %g" % self.fixed[fn]
        return None

    def draw(self, fn, rng):
        """Seconds of one call of fn."""
        q = self.quantiles.get(fn)
        if q:
            rank = rng.random() * (len(q) - 1)
            low = int(rank)
            high = min(low + 1, len(q) - 1)
            return (q[low] + (q[high] - q[low]) * (rank - low)) / 1000.0
        if fn in self.fixed:
            return self.fixed[fn] / 1000.0
        raise NoServiceTime("no service time for %s: give it `service_ms` in the scenario, or "
                            "--measured RESULT.json from a bench run that measured it" % fn)

    def measured_mean_ms(self, fn):
        """The mean of fn's measured exec_ms (of the distribution `draw` draws from: linear
        between the quantiles), None when it was not measured."""
        q = self.quantiles.get(fn)
        if not q:
            return None
        if len(q) == 1:
            return q[0]
        return (sum(q) - (q[0] + q[-1]) / 2.0) / (len(q) - 1)

    def init_s(self):
        return {fn: ms / 1000.0 for fn, ms in self.init_ms.items()}


def _rng(phase, run_index, what):
    # Seeded by the phase and the repeat only: every strategy gets the same service times.
    return random.Random("%s/%d/%s" % (phase.name, run_index, what))


def phase_jobs(phase, sc, run_index, service):
    """The model's Jobs for an open or trace phase: the arrivals `minifaas bench` sends."""
    rng = _rng(phase, run_index, "service")
    if phase.kind == "open":
        names = {n: n for n in phase.mix}
        return [model.Job(offset, name, service.draw(name, rng))
                for offset, name, _, _ in runner.open_items(phase, sc, names, run_index)]
    invs = traces.phase_invocations(phase)
    chosen = invs[:phase.limit] if phase.limit else invs
    plan = list(zip(chosen, traces.schedule(chosen, phase.functions, phase.speedup)))
    if not phase.input_from_duration:
        return [model.Job(offset, name, service.draw(name, rng), traces.short_name(inv.func))
                for inv, (offset, name, _) in plan]
    # Each call runs for the milliseconds it asks; when a run measured the function, stretched
    # by measured mean / asked mean (spin.c on shared cores runs longer than it was asked to).
    asked = [traces.duration_input_ms(duration, phase.speedup, phase.max_input_ms) for _, (_, _, duration) in plan]
    stretch = {}
    for name in {name for _, (_, name, _) in plan}:
        mine = [ms for ms, (_, (_, n, _)) in zip(asked, plan) if n == name]
        measured = service.measured_mean_ms(name)
        stretch[name] = measured / (sum(mine) / len(mine)) if measured else 1.0
    return [model.Job(offset, name, ms * stretch[name] / 1000.0, traces.short_name(inv.func))
            for ms, (inv, (offset, name, _)) in zip(asked, plan)]


def _samples(calls, shift=0.0):
    """The model's Calls as the injector's Samples (times moved by `shift` s)."""
    return [injector.Sample(fn=c.job.fn, intended=c.job.at + shift, sent=c.start + shift, done=c.end + shift,
                            status=200 if c.ok else 429, ok=c.ok, kind=c.kind, worker=c.worker,
                            cold=c.cold if c.ok else None, exec_ms=c.job.service * 1000.0)
            for c in calls]


def run_figures(calls, count="all", started=0.0):
    """The figures of one simulated run, in the format of a measured one (injector.summarize),
    with its slowdown and cold-start figures."""
    samples, records = _samples(calls), []
    for c in calls:
        records.append({"fn": c.job.fn, "t": c.end - started, "ok": c.ok, "cold": c.cold if c.ok else None,
                        "latency_ms": (c.end - c.job.at) * 1000.0, "exec_ms": c.job.service * 1000.0,
                        "queue_ms": (c.start - c.job.at) * 1000.0, "trace_fn": c.job.tag if isinstance(c.job.tag, str) else None})
    keep = {id(r) for r in invocations.select(records, count)}
    samples = [s for s, r in zip(samples, records) if id(r) in keep]
    records = [r for r in records if id(r) in keep]
    ended = max([c.end for c in calls] + [started])
    figures = injector.summarize(samples, started, ended)
    invocations.merge_into(figures, invocations.figures(records, ended - started))
    figures["late"] = 0
    figures["offered_rps"] = len(calls) / max(ended - started, 1e-9)
    figures["simulated"] = True
    return figures


def simulate_sweep(phase, sc, strategy, workers, run_index, service, weights=None):
    """A sweep's steps through the model, each on a fresh model from idle (as each measured step
    is drained before the next), with the step and capacity rules of harness/analysis/sweep.py.

    Warm: bench warms every worker up with each function before the first step (runner.warm_up),
    so no measured step pays a first call's init; a fresh model with init times would pay it on
    every worker at every step (4 x 300 ms of Python init put each predicted p99 over 600 ms)."""
    names = {n: n for n in phase.mix}
    all_calls, steps, t0 = [], [], 0.0
    for i, rate in enumerate(phase.rates):
        rng = _rng(phase, run_index, "service/%d" % i)
        jobs = [model.Job(t0 + offset, name, service.draw(name, rng))
                for offset, name, _, _ in runner.sweep_items(phase, sc, names, run_index, i, rate)]
        calls = model.Model(workers, strategy, weights=weights).run(jobs)
        step = sweep.step_figures(_samples(calls), t0, phase.warmup, t0 + phase.step_duration, rate, phase.slo_p99_ms)
        step["t"] = t0
        steps.append(step)
        all_calls += calls
        t0 = max([t0 + phase.step_duration] + [c.end for c in calls])
        if step["saturated"] and phase.stop_when_saturated:
            break
    figures = run_figures(all_calls, phase.count)
    cap = sweep.capacity(steps, phase.slo_p99_ms)
    figures.update(steps=steps, slo_p99_ms=phase.slo_p99_ms, capacity_rps=cap["capacity_rps"],
                   capacity_bound=cap["bound"], saturated=any(s["saturated"] for s in steps))
    return figures


def simulate_phase(phase, sc, strategy, workers, run_index, service, weights=None):
    """One run of one phase through the model; raises NoServiceTime."""
    if phase.kind == "sweep":
        return simulate_sweep(phase, sc, strategy, workers, run_index, service, weights)
    m = model.Model(workers, strategy, weights=weights, init_s=service.init_s())
    if phase.kind == "closed":
        rng = _rng(phase, run_index, "service")
        calls = model.closed_loop(m, phase.threads, phase.requests, phase.function,
                                  lambda: service.draw(phase.function, rng))
    else:
        calls = m.run(phase_jobs(phase, sc, run_index, service))
    return run_figures(calls, phase.count)


def simulate_strategy(sc, strategy, spec, service, workers=None, progress=None):
    """What run_strategy would return, from the model: every phase x repeat."""
    progress = progress or runner.Progress()
    workers = workers or spec.workers
    started = time.monotonic()
    out = {"ok": True, "errors": [], "deploy": {}, "cold": {}, "phases": {}, "strategy": strategy,
           "stack": dict(spec.describe(), workers=workers), "simulated": True}
    for phase in sc.phases:
        entry = out["phases"][phase.name] = {"kind": phase.kind, "runs": []}
        if phase.kind not in SIMULATED_KINDS:
            entry["skipped"] = "the model does not simulate %s phases" % phase.kind
            continue
        try:
            for run_index in range(sc.repeat):
                entry["runs"].append(simulate_phase(phase, sc, strategy, workers, run_index, service, spec.weights))
        except NoServiceTime as e:
            entry["runs"], entry["skipped"] = [], str(e)
            continue
        entry["aggregate"] = runner.aggregate(entry["runs"])
        agg = entry["aggregate"]["latency_ms"]
        progress.say("  %s %s: %d calls, p50 %s ms, p99 %s ms" % (
            spec.key(strategy), phase.name, entry["aggregate"]["requests"],
            _ms(agg["p50"]["mean"]), _ms(agg["p99"]["mean"])))
    out["wall_s"] = time.monotonic() - started
    return out


def _ms(v):
    return "n/a" if v is None else "%.1f" % v


def simulate_scenario(sc, workers=None, strategies=None, service=None, progress=None):
    """The whole result document of a scenario, simulated."""
    progress = progress or runner.Progress()
    service = service or ServiceTimes(sc.functions)
    runs = sc.runs(strategies)
    result = {
        "format_version": results.FORMAT_VERSION,
        "metadata": results.metadata(),
        "simulated": True,
        "scenario": {"name": sc.name, "description": sc.description, "file": sc.path,
                     "workers": workers or sc.workers, "strategies": [key for key, _, _ in runs],
                     "stacks": {key: dict(spec.describe(), strategy=s, workers=workers or spec.workers)
                                for key, s, spec in runs},
                     "repeat": sc.repeat, "phases": [p.name for p in sc.phases], "definition": sc.raw},
        "model": {"service": {f.name: service.source(f.name) for f in sc.functions},
                  "init_ms": service.init_ms},
        "strategies": {},
        "ok": True,
        "errors": [],
    }
    for key, strategy, spec in runs:
        result["strategies"][key] = simulate_strategy(sc, strategy, spec, service, workers, progress)
    return result


def predict(sc, spec, strategy, outcome):
    """Beside each measured run of a `model = true` phase in `outcome` (run_strategy's), the
    model's prediction from that run's own exec_ms: `predicted` in the run, and in the aggregate
    the spread of the predicted p50, p99 and throughput."""
    for phase in sc.phases:
        entry = outcome["phases"].get(phase.name)
        if not phase.model or not entry or not entry.get("runs") or phase.kind not in SIMULATED_KINDS:
            continue
        for i, run in enumerate(entry["runs"]):
            service = ServiceTimes.from_runs(sc.functions, [run], outcome.get("cold"))
            try:
                run["predicted"] = _headline(simulate_phase(phase, sc, strategy, spec.workers, run.get("repeat", i),
                                                            service, spec.weights))
            except NoServiceTime as e:
                run["predicted"] = {"error": str(e)}
        predicted = [r["predicted"] for r in entry["runs"] if "error" not in r["predicted"]]
        if predicted and "aggregate" in entry:
            entry["aggregate"]["predicted"] = {
                "throughput_rps": stats.spread([p["throughput_rps"] for p in predicted]),
                "latency_ms": {k: stats.spread([p["latency_ms"][k] for p in predicted]) for k in ("p50", "p99")},
                "slowdown": {k: stats.spread([p["slowdown"][k] for p in predicted]) for k in ("p50", "p99", "mean")},
            }
            if phase.kind == "sweep":
                entry["aggregate"]["predicted"]["capacity_rps"] = stats.spread(
                    [p.get("capacity_rps") for p in predicted])
    return outcome


def _headline(figures):
    """The predicted figures kept beside a measured run (not the whole simulated run)."""
    out = {"throughput_rps": figures["throughput_rps"], "latency_ms": figures["latency_ms"],
           "slowdown": figures["slowdown"], "cold_rate": figures["cold"]["rate"],
           "per_function": {fn: {"p99": f["latency_ms"]["p99"], "slowdown_p99": f.get("slowdown", {}).get("p99")}
                            for fn, f in figures["per_function"].items()}}
    if "steps" in figures:
        out["capacity_rps"], out["capacity_bound"] = figures["capacity_rps"], figures["capacity_bound"]
        out["steps"] = [{"offered_rps": s["offered_rps"], "achieved_rps": s["achieved_rps"],
                         "p50": s["latency_ms"]["p50"], "p99": s["latency_ms"]["p99"], "saturated": s["saturated"]}
                        for s in figures["steps"]]
    return out


# -- minifaas simulate ---------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO.toml", help="scenario files")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers of every simulated stack (default: the scenario's)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default %s)" % DEFAULT_OUT)
    parser.add_argument("--strategies", default=None,
                        help="comma-separated strategies overriding the files' lists, e.g. RR,FIFO")
    parser.add_argument("--measured", default=None, metavar="RESULT.json",
                        help="service times from the exec_ms a bench run measured (default: the "
                             "trace's durations, else each function's service_ms)")


def cli(args):
    if args.workers is not None and args.workers < 1:
        print("minifaas simulate: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        scenarios = [scenario.load(p) for p in args.scenarios]
    except scenario.ScenarioError as e:
        print("minifaas simulate: %s" % e, file=sys.stderr)
        return 2
    measured = None
    if args.measured:
        try:
            measured = results.load(args.measured)
        except results.ResultError as e:
            print("minifaas simulate: %s" % e, file=sys.stderr)
            return 2
    strategies = [s.strip() for s in args.strategies.split(",")] if args.strategies else None
    progress = runner.Progress()
    status = 0
    for sc in scenarios:
        service = (ServiceTimes.from_result(sc.functions, measured) if measured
                   else ServiceTimes(sc.functions))
        progress.say("== simulating %s (%s)%s" % (sc.name, sc.path,
                                                  ", %d workers" % args.workers if args.workers else ""))
        started = time.monotonic()
        result = simulate_scenario(sc, args.workers, strategies, service, progress)
        directory = os.path.join(args.out, sc.name)
        path = results.write(result, directory)
        redraw(results.load(path), directory)
        skipped = sorted({e["skipped"] for s in result["strategies"].values()
                          for e in s["phases"].values() if e.get("skipped")})
        for why in skipped:
            progress.say("   skipped: %s" % why)
        if skipped:
            status = 1
        progress.say("== %s simulated in %.1f s: %s" % (sc.name, time.monotonic() - started, path))
    return status
