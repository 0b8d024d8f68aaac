"""Run one scenario's phases on a fresh stack: deploy, first (cold) calls, then each phase once.

bench.py starts one stack per (column, repeat) in the balanced order Scenario.schedule() gives,
and `merge` gathers a column's stack runs into one entry of the result.

The runner only measures and returns plain dicts; results.py stores them and report.py and
plots.py read them back, so a report never depends on how the figures were taken.
"""

import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse

from harness.analysis import invocations, stats, sweep
from harness.load import injector, pool, traces
from harness.run import host
from harness.run.stack import Stack, StackError

log = logging.getLogger(__name__)

DEPLOY_TIMEOUT_S = 300.0   # compiling Rust or Go to wasm can take a while on a busy machine
# The injector was the limit of a run when it used more than this share of a core, or sent
# more than this share of its requests late (DESIGN.md, "Fair comparisons").
INJECTOR_CPU_LIMIT = 0.5
INJECTOR_LATE_LIMIT = 0.01
SWEEP_TIMEOUT_S = 30.0     # past saturation an answer can take long; a step still ends


class Progress:
    """Progress lines on stderr: what runs, and how far along it is, at most every `every` seconds."""

    def __init__(self, stream=None, every=2.0):
        self.stream = stream or sys.stderr
        self.every = every
        self.lock = threading.Lock()
        self.label, self.total, self.done, self.last = "", 0, 0, 0.0
        self.strategy = ""   # set by run_strategy, shown in every phase label

    def say(self, text):
        with self.lock:
            print(text, file=self.stream, flush=True)

    def start(self, label, total):
        with self.lock:
            self.label, self.total, self.done, self.last = label, total, 0, time.monotonic()
        self.say("  %s: %d requests" % (label, total))

    def advance(self, n=1):
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                print("  %s: %d/%d" % (self.label, self.done, self.total), file=self.stream, flush=True)


def deploy(client, function):
    """POST /deploy one scenario function; returns the record stored in the result."""
    with open(function.source, "rb") as f:
        source = f.read()
    query = {"name": function.name, "lang": function.lang}
    for key in ("timeout_ms", "memory_mb", "max_concurrency", "max_queue"):
        if getattr(function, key) is not None:
            query[key] = getattr(function, key)
    if function.reuse:
        query["reuse"] = "true"
    started = time.monotonic()
    try:
        status, answer = client.post("/deploy?" + urllib.parse.urlencode(query), source,
                                     content_type="application/octet-stream")
    except OSError as e:
        status, answer = 0, {"ok": False, "error": "no answer from the gateway: %s" % e, "kind": "connection"}
    record = {"lang": function.lang, "status": status, "ok": status == 201 and bool(answer.get("ok")),
              "deploy_ms": (time.monotonic() - started) * 1000.0}
    if record["ok"]:
        record["id"] = answer["id"]
        for key in ("max_concurrency", "max_queue", "reuse"):
            if answer.get(key):
                record[key] = answer[key]
    else:
        detail = answer.get("details") or answer.get("install") or ""
        record["error"] = ("%s %s" % (answer.get("error", "deploy failed"), detail)).strip()
        record["kind"] = answer.get("kind")
    return record


def first_call(client, fn_id, value):
    """The first invocation after deploy, timed alone: the cold start a user would see."""
    started = time.monotonic()
    try:
        status, answer = client.post("/invoke?fn=" + urllib.parse.quote(fn_id), injector.payload_for(value))
    except OSError as e:
        return {"ok": False, "kind": "connection", "error": str(e)}
    record = {"ok": status == 200 and answer.get("ok") is True,
              "latency_ms": (time.monotonic() - started) * 1000.0, "status": status}
    for key in ("cold", "worker", "init_ms", "exec_ms", "queue_ms", "duration_ms", "kind", "error"):
        if key in answer:
            record[key] = answer[key]
    return record


def open_items(phase, scenario, ids, run_index):
    """Poisson arrivals at `rate` for `duration` over the mix: (offset, name, id, payload) items.

    The seed depends only on the phase and the run, so every strategy sees the same arrivals.
    """
    rng = random.Random("%s/%d" % (phase.seed, run_index))
    names = sorted(phase.mix)
    weights = [phase.mix[n] for n in names]
    items, t = [], rng.expovariate(phase.rate)
    while t < phase.duration:
        name = rng.choices(names, weights)[0]
        value = phase.input_for(scenario.function(name))
        items.append((t, name, ids[name], injector.payload_for(value)))
        t += rng.expovariate(phase.rate)
    return items


def trace_items(phase, scenario, ids, tags=None):
    """The trace's calls as (offset, name, id, payload) items; `tags`, a list, gets the trace
    function each stands for (its short name), item by item."""
    chosen = traces.phase_invocations(phase)
    chosen = chosen[:phase.limit] if phase.limit else chosen
    items = []
    for inv, (offset, name, duration) in zip(chosen, traces.schedule(chosen, phase.functions, phase.speedup)):
        if phase.input_from_duration:
            # The trace's run time, compressed like its clock, becomes e.g. spin.c's milliseconds.
            value = str(traces.duration_input_ms(duration, phase.speedup, phase.max_input_ms))
        else:
            value = phase.input_for(scenario.function(name))
        items.append((offset, name, ids[name], injector.payload_for(value)))
        if tags is not None:
            tags.append(traces.short_name(inv.func))
    return items


def phase_functions(phase):
    if phase.kind == "closed":
        return [phase.function]
    if phase.kind in ("open", "sweep"):
        return sorted(phase.mix)
    return sorted(set(phase.functions))


def sweep_items(phase, scenario, ids, run_index, step_index, rate):
    """One step's Poisson arrivals, seeded by phase, run and step (the same for every column)."""
    rng = random.Random("%s/%d/%d" % (phase.seed, run_index, step_index))
    names = sorted(phase.mix)
    weights = [phase.mix[n] for n in names]
    items, t = [], rng.expovariate(rate)
    while t < phase.step_duration:
        name = rng.choices(names, weights)[0]
        items.append((t, name, ids[name], injector.payload_for(phase.input_for(scenario.function(name)))))
        t += rng.expovariate(rate)
    return items


def warm_up(url, phase, scenario, ids):
    """A few concurrent calls of each function of the mix, not counted: the first step of a
    sweep would otherwise measure every worker's first call of each function (a cold start)
    against the SLO, and a platform could fail its lowest rate for it."""
    for name in sorted(phase.mix):
        payload = injector.payload_for(phase.input_for(scenario.function(name)))
        injector.run_closed(url, ids[name], max(scenario.workers, 1), 2, payload, name=name, timeout=SWEEP_TIMEOUT_S)


def run_sweep(url, phase, scenario, ids, run_index, progress, label):
    """The steps of a sweep, rate by rate, each drained before the next; (samples, steps, started, ended)."""
    samples, steps, started = [], [], None
    warm_up(url, phase, scenario, ids)
    for i, rate in enumerate(phase.rates):
        items = sweep_items(phase, scenario, ids, run_index, i, rate)
        progress.start("%s step %d/%d (%g req/s)" % (label, i + 1, len(phase.rates), rate), len(items))
        mine, t0, ended, _ = injector.run_schedule(url, items, phase.senders, progress=progress.advance,
                                                   timeout=SWEEP_TIMEOUT_S)
        started = t0 if started is None else started
        samples += mine
        step = sweep.step_figures(mine, t0, phase.warmup, t0 + phase.step_duration, rate, phase.slo_p99_ms)
        step["t"] = t0 - started
        steps.append(step)
        if step["saturated"] and phase.stop_when_saturated:
            break
    return samples, steps, started, ended


def run_phase(url, phase, scenario, ids, run_index, progress, server_sock=None):
    label = "%s run %d/%d phase %s" % (progress.strategy, run_index + 1, scenario.repeat, phase.name)
    watcher = pool.PoolWatcher(url, server_sock)
    machine = host.before_run()
    cpu = injector.CpuMeter()
    items, tags = None, []
    if phase.kind == "closed":
        value = phase.input_for(scenario.function(phase.function))
        progress.start(label, phase.threads * phase.requests)
        with watcher, cpu:
            samples, started, ended = injector.run_closed(
                url, ids[phase.function], phase.threads, phase.requests, injector.payload_for(value),
                name=phase.function, progress=progress.advance)
        samples = invocations.select(samples, phase.count)
        figures = injector.summarize(samples, started, ended)
    elif phase.kind == "sweep":
        with watcher, cpu:
            samples, steps, started, ended = run_sweep(url, phase, scenario, ids, run_index, progress, label)
        figures = injector.summarize(samples, started, ended)
        figures["late"] = sum(1 for s in samples if s.sent - s.intended > injector.LATE_S)
        figures["steps"] = steps
        figures["slo_p99_ms"] = phase.slo_p99_ms
        cap = sweep.capacity(steps, phase.slo_p99_ms)
        figures["capacity_rps"], figures["capacity_bound"] = cap["capacity_rps"], cap["bound"]
        figures["saturated"] = any(s["saturated"] for s in steps)
    else:
        items = (open_items(phase, scenario, ids, run_index) if phase.kind == "open"
                 else trace_items(phase, scenario, ids, tags))
        progress.start(label, len(items))
        with watcher, cpu:
            samples, started, ended, late = injector.run_schedule(url, items, phase.senders,
                                                                  progress=progress.advance)
        counted = invocations.select(samples, phase.count)
        figures = injector.summarize(counted, started, ended)
        figures["late"] = late
        figures["offered_rps"] = len(items) / max(ended - started, 1e-9)
        # Over the arrivals' own span: did the platform keep up with what was offered? Only
        # then does an open phase's throughput say anything (else it is the offered rate).
        span = max((offset for offset, *_ in items), default=0.0)
        if span > 0:
            kept = sweep.step_figures(samples, started, 0.0, started + span, len(items) / span, float("inf"))
            figures["saturated"] = kept["achieved_rps"] < sweep.ACHIEVED_SHARE * kept["arrival_rps"]
        else:
            figures["saturated"] = False
    # Slowdown (latency / the call's own exec_ms) and cold starts, per function and trace function.
    calls = invocations.records(invocations.select(samples, phase.count), started, items, tags)
    invocations.merge_into(figures, invocations.figures(calls, ended - started))
    # On the phase's own clock, like `timeline`, so the two line up in the plots; the samples
    # taken just before the first request and just after the last stand for the ends.
    shift, length = watcher.started - started, ended - started
    figures["pool_timeline"] = [dict(s, t=round(min(max(s["t"] + shift, 0.0), length), 3))
                                for s in watcher.samples]
    figures["pool"] = pool.summarize(figures["pool_timeline"])
    figures["host"] = host.change(machine, host.snapshot())
    figures["injector"] = injector_record(cpu.share, figures.get("late", 0), figures["requests"])
    return figures


def injector_record(cpu_share, late, requests):
    """The injector's CPU share and late share, and whether either says it was the limit."""
    late_share = late / requests if requests else 0.0
    limited = []
    if cpu_share is not None and cpu_share > INJECTOR_CPU_LIMIT:
        limited.append("injector CPU %.0f%% of a core" % (100 * cpu_share))
    if late_share > INJECTOR_LATE_LIMIT:
        limited.append("%.1f%% of requests sent late" % (100 * late_share))
    return {"cpu_share": cpu_share, "late_share": late_share, "limited": limited}


def aggregate(runs):
    """Totals over the repeats and the spread of the headline figures (mean, stdev, 95% CI)."""
    errors = {}
    for r in runs:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return {
        "runs": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "errors": errors,
        "throughput_rps": stats.spread([r["throughput_rps"] for r in runs]),
        "latency_ms": {k: stats.spread([r["latency_ms"][k] for r in runs])
                       for k in ("p50", "p90", "p99", "max", "mean")},
        "workers_mean": stats.spread([r.get("pool", {}).get("workers_mean") for r in runs]),
        **_sweep_aggregate(runs),
    }


def _sweep_aggregate(runs):
    """For sweeps: capacity over the repeats, and each step's figures over the runs that reached it."""
    if not runs or "steps" not in runs[0]:
        return {}
    by_rate = {}
    for r in runs:
        for step in r["steps"]:
            by_rate.setdefault(step["offered_rps"], []).append(step)
    steps = [{"offered_rps": rate, "runs": len(found),
              "achieved_rps": stats.spread([s["achieved_rps"] for s in found]),
              "p50": stats.spread([s["latency_ms"]["p50"] for s in found]),
              "p99": stats.spread([s["latency_ms"]["p99"] for s in found]),
              "saturated": sum(1 for s in found if s["saturated"])}
             for rate, found in sorted(by_rate.items())]
    return {"capacity_rps": stats.spread([r.get("capacity_rps") for r in runs]),
            "capacity_bounds": sorted({r.get("capacity_bound") for r in runs if r.get("capacity_bound")}),
            "steps": steps}


def start_cluster(spec):
    """nats-server and the worker hosts a NATS stack needs; (cluster, None) or (None, why not)."""
    try:
        from reference.executors.nats.executor import LocalCluster
    except ImportError as e:
        return None, "the NATS executor cannot be imported: %s" % e
    cluster = LocalCluster(hosts=spec.hosts, workers=spec.workers)
    try:
        return cluster.start(), None
    except Exception as e:   # nats-server missing or not starting: recorded, not raised
        cluster.close()
        return None, "the NATS cluster did not start: %s" % e


def describe_stack(spec):
    if spec.executor == "nats":
        what = "%d worker host(s) x %d workers over NATS" % (spec.hosts, spec.workers)
    else:
        what = "%d workers" % spec.workers
    if spec.autoscaling():
        what += ", auto-scaling %s..%s" % (spec.min_workers or "", spec.max_workers or "")
    return what


class Deployed:
    """The functions tree of a scenario's first complete deploy, handed to every later stack.

    A fresh stack per repeat would compile every C, Rust and Go function again each time: on a
    busy 2-core machine that is most of the run, and a compiler stopped at its time limit loses
    a whole repeat. Each later stack starts on its own copy of the tree (the gateway finds the
    functions again, as after a restart): fresh processes and workers, the same code, so the
    first calls are cold again and every column runs exactly the same artifacts.
    """

    def __init__(self):
        self._tmp = None
        self.ids, self.records = {}, {}

    @property
    def ready(self):
        return self._tmp is not None

    def keep(self, functions_dir, ids, records):
        """Keep a copy of `functions_dir`; if it cannot be copied, later stacks deploy again."""
        tmp = tempfile.TemporaryDirectory(prefix="minifaas-deployed-")
        try:
            # The tree's name index holds symbolic links: copied as links, not followed.
            shutil.copytree(functions_dir, os.path.join(tmp.name, "functions"), symlinks=True)
        except (OSError, shutil.Error) as e:
            log.warning("the deployed functions cannot be kept (%s): every stack deploys again", e)
            tmp.cleanup()
            return
        self._tmp, self.ids, self.records = tmp, dict(ids), records

    def copy(self):
        """A private copy of the tree for one stack (removed with the Deployed)."""
        target = tempfile.mkdtemp(prefix="stack-", dir=self._tmp.name)
        return shutil.copytree(os.path.join(self._tmp.name, "functions"), os.path.join(target, "functions"),
                               symlinks=True)

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def run_strategy(scenario, strategy, progress=None, stack_factory=Stack, spec=None, repeats=None, deployed=None):
    """Everything measured for one strategy on one stack (`spec`, a StackSpec; default the
    scenario's first): the repeats numbered in `repeats` (default all of them) of every phase.
    With `deployed` (a Deployed), the functions are deployed once and reused by later stacks.
    Never raises for a platform failure (it is recorded)."""
    progress = progress or Progress()
    spec = spec or scenario.stacks[0]
    progress.strategy = spec.key(strategy)
    result = {"ok": True, "errors": [], "deploy": {}, "cold": {}, "phases": {},
              "strategy": strategy, "stack": spec.describe()}
    started = time.monotonic()
    cluster, extra_args = None, spec.extra_args()
    if spec.executor == "nats":
        cluster, why = start_cluster(spec)
        if cluster is None:
            result["ok"] = False
            result["errors"].append(why)
            return result
        extra_args += cluster.extra_args
    reuse = deployed is not None and deployed.ready
    options = {"functions_dir": deployed.copy()} if reuse else {}
    stack = stack_factory(strategy=strategy, workers=spec.workers, extra_args=extra_args, **options)
    try:
        progress.say("[%s] %s: starting a stack with %s" % (scenario.name, progress.strategy, describe_stack(spec)))
        stack.start()
    except (StackError, OSError) as e:
        stack.close()  # a StackError already closed it; an OSError from Popen did not
        if cluster:
            cluster.close()
        result["ok"] = False
        result["errors"].append("the stack did not start: %s" % str(e)[-2000:])
        return result
    client = injector.Client(stack.url, timeout=DEPLOY_TIMEOUT_S)
    try:
        ids = {}
        for function in scenario.functions:
            if reuse:
                record = dict(deployed.records[function.name], reused=True)
            else:
                progress.say("[%s] %s: deploying %s (%s)" % (scenario.name, progress.strategy, function.name,
                                                              function.lang))
                record = deploy(client, function)
            result["deploy"][function.name] = record
            if record["ok"]:
                ids[function.name] = record["id"]
                value = function.input if function.input is not None else ""
                result["cold"][function.name] = first_call(client, record["id"], value)
            else:
                result["ok"] = False
                result["errors"].append("deploy of %s failed: %s" % (function.name, record["error"]))
        if deployed is not None and not reuse and len(ids) == len(scenario.functions):
            deployed.keep(stack.functions_dir, ids, result["deploy"])
        for phase in scenario.phases:
            missing = [n for n in phase_functions(phase) if n not in ids]
            if missing:
                result["phases"][phase.name] = {"kind": phase.kind, "runs": [],
                                                "skipped": "not deployed: %s" % ", ".join(missing)}
        for run_index in (range(scenario.repeat) if repeats is None else repeats):
            for phase in scenario.phases:
                entry = result["phases"].setdefault(phase.name, {"kind": phase.kind, "runs": []})
                if "skipped" in entry:
                    continue
                figures = run_phase(stack.url, phase, scenario, ids, run_index, progress,
                                    getattr(stack, "server_sock", None))
                figures["repeat"] = run_index
                entry["runs"].append(figures)
        for entry in result["phases"].values():
            if entry["runs"]:
                entry["aggregate"] = aggregate(entry["runs"])
        if stack.proc is None or stack.proc.poll() is not None:
            result["ok"] = False
            result["errors"].append("the stack exited during the run:\n%s" % stack.output()[-2000:])
    except Exception as e:   # a harness bug in one scenario must not lose the others' results
        log.exception("scenario %s, strategy %s failed", scenario.name, strategy)
        result["ok"] = False
        result["errors"].append("harness error: %r" % e)
    finally:
        client.close()
        stack.close()
        if cluster:
            cluster.close()
    result["wall_s"] = time.monotonic() - started
    return result


def merge(outcomes):
    """One column's stack runs (run_strategy results, in the order they ran) as one entry:
    every phase's runs together, aggregated again; deploys and first calls of the first stack
    (each stack's are kept in `stack_runs`)."""
    first = outcomes[0]
    merged = {"ok": all(o["ok"] for o in outcomes), "errors": [], "deploy": first["deploy"],
              "cold": first["cold"], "phases": {}, "strategy": first["strategy"], "stack": first["stack"],
              "wall_s": sum(o.get("wall_s", 0.0) for o in outcomes),
              "stack_runs": [{"deploy": o["deploy"], "cold": o["cold"], "wall_s": o.get("wall_s"),
                              "ok": o["ok"]} for o in outcomes]}
    for i, o in enumerate(outcomes):
        merged["errors"] += ["stack %d: %s" % (i + 1, e) if len(outcomes) > 1 else e for e in o["errors"]]
        for name, entry in o["phases"].items():
            target = merged["phases"].setdefault(name, {"kind": entry["kind"], "runs": []})
            target["runs"] += entry.get("runs", [])
            if "skipped" in entry:
                target.setdefault("skipped", entry["skipped"])
    for entry in merged["phases"].values():
        if entry["runs"]:
            entry["aggregate"] = aggregate(entry["runs"])
    return merged
