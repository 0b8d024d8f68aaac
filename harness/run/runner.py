"""Run one scenario for one strategy on a fresh stack: deploy, first (cold) calls, phases x repeat.

The runner only measures and returns plain dicts; results.py stores them and report.py and
plots.py read them back, so a report never depends on how the figures were taken.
"""

import logging
import random
import sys
import threading
import time
import urllib.parse

from harness.analysis import stats
from harness.load import injector, pool, traces
from harness.run.stack import Stack, StackError

log = logging.getLogger(__name__)

DEPLOY_TIMEOUT_S = 300.0   # compiling Rust or Go to wasm can take a while on a busy machine


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
    for key in ("timeout_ms", "memory_mb"):
        if getattr(function, key) is not None:
            query[key] = getattr(function, key)
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


def trace_items(phase, scenario, ids):
    invocations = traces.read(phase.file, phase.format)
    items = []
    for offset, name, duration in traces.schedule(invocations, phase.functions, phase.speedup, phase.limit):
        if phase.input_from_duration:
            # The trace's run time, compressed like its clock, becomes e.g. spin.c's milliseconds.
            value = str(round(min(duration * 1000.0 / phase.speedup, phase.max_input_ms)))
        else:
            value = phase.input_for(scenario.function(name))
        items.append((offset, name, ids[name], injector.payload_for(value)))
    return items


def phase_functions(phase):
    if phase.kind == "closed":
        return [phase.function]
    if phase.kind == "open":
        return sorted(phase.mix)
    return sorted(set(phase.functions))


def run_phase(url, phase, scenario, ids, run_index, progress, server_sock=None):
    label = "%s run %d/%d phase %s" % (progress.strategy, run_index + 1, scenario.repeat, phase.name)
    watcher = pool.PoolWatcher(url, server_sock)
    if phase.kind == "closed":
        value = phase.input_for(scenario.function(phase.function))
        progress.start(label, phase.threads * phase.requests)
        with watcher:
            samples, started, ended = injector.run_closed(
                url, ids[phase.function], phase.threads, phase.requests, injector.payload_for(value),
                name=phase.function, progress=progress.advance)
        figures = injector.summarize(samples, started, ended)
    else:
        items = (open_items(phase, scenario, ids, run_index) if phase.kind == "open"
                 else trace_items(phase, scenario, ids))
        progress.start(label, len(items))
        with watcher:
            samples, started, ended, late = injector.run_schedule(url, items, phase.senders,
                                                                  progress=progress.advance)
        figures = injector.summarize(samples, started, ended)
        figures["late"] = late
        figures["offered_rps"] = len(items) / max(ended - started, 1e-9)
    # On the phase's own clock, like `timeline`, so the two line up in the plots; the samples
    # taken just before the first request and just after the last stand for the ends.
    shift, length = watcher.started - started, ended - started
    figures["pool_timeline"] = [dict(s, t=round(min(max(s["t"] + shift, 0.0), length), 3))
                                for s in watcher.samples]
    figures["pool"] = pool.summarize(figures["pool_timeline"])
    return figures


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
    }


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


def run_strategy(scenario, strategy, progress=None, stack_factory=Stack, spec=None):
    """Everything measured for one strategy on one stack (`spec`, a StackSpec; default the
    scenario's first); never raises for a platform failure (it is recorded)."""
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
    stack = stack_factory(strategy=strategy, workers=spec.workers, extra_args=extra_args)
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
        for phase in scenario.phases:
            missing = [n for n in phase_functions(phase) if n not in ids]
            if missing:
                result["phases"][phase.name] = {"kind": phase.kind, "runs": [],
                                                "skipped": "not deployed: %s" % ", ".join(missing)}
        for run_index in range(scenario.repeat):
            for phase in scenario.phases:
                entry = result["phases"].setdefault(phase.name, {"kind": phase.kind, "runs": []})
                if "skipped" in entry:
                    continue
                entry["runs"].append(run_phase(stack.url, phase, scenario, ids, run_index, progress,
                                               getattr(stack, "server_sock", None)))
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
