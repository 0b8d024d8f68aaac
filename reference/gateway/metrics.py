"""Prometheus metrics of the gateway (`GET /metrics`): invocations, durations, cold starts,
deploys and compile times, plus the server's queue and workers read at scrape time.

The gateway is the one process that sees every invocation's answer and every deploy, and it
is a single process (gevent or waitress serves it), so one in-process registry is exact:
prometheus_client's multiprocess mode is for several processes serving one app, not needed here.
Worker-side figures (cold, init_ms, exec_ms, queue_ms) arrive in each answer from the server.
"""

import bisect
import logging
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from reference.gateway.store import real_lock
from reference.wire.errors import FaasError

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a warm wasm call (~1 ms) to a function at its 60 s ceiling.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMPILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerCollector:
    """Reads the server's stats at scrape time: queue length, busy and total workers."""

    def __init__(self, client):
        self.client = client

    def collect(self):
        up = GaugeMetricFamily("faas_server_up", "1 when the server and balancer answered the scrape")
        try:
            stats = self.client.stats()
        except FaasError as exc:
            log.debug("metrics: no server stats: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1 if stats.get("balancer", True) else 0)
        yield up
        workers = stats.get("workers") or []
        yield GaugeMetricFamily("faas_queue_length", "invocations waiting for a worker",
                                value=stats.get("queue") or 0)
        yield GaugeMetricFamily("faas_workers", "workers in the pool (alive or starting)",
                                value=sum(1 for w in workers if w.get("state") != "dead"))
        yield GaugeMetricFamily("faas_workers_busy", "workers running an invocation",
                                value=sum(1 for w in workers if w.get("state") == "busy"))


# The invocation histograms: (metric name, help, the answer's field in ms).
TIMINGS = (
    ("faas_invocation_duration_seconds", "gateway-side total time of an invocation", "duration_ms"),
    ("faas_invocation_queue_seconds", "time an invocation waited for a worker", "queue_ms"),
    ("faas_invocation_init_seconds", "time to load or start the function in the worker", "init_ms"),
    ("faas_invocation_exec_seconds", "time the function ran in the worker", "exec_ms"),
)


class _Function:
    """One function's invocation figures: per-bucket counts and the sum of each timing."""

    __slots__ = ("created", "buckets", "sums", "cold")

    def __init__(self):
        self.created = time.time()
        self.buckets = [[0] * (len(DURATION_BUCKETS) + 1) for _ in TIMINGS]   # the last: +Inf
        self.sums = [0.0] * len(TIMINGS)
        self.cold = 0


class InvocationCollector:
    """The invocation metrics, counted in plain lists under one lock per invocation and turned
    into Prometheus families at scrape time. prometheus_client's Counter and Histogram take a
    lock per observation (six per invocation, and under gevent each is a greenlet lock written in
    Python): 8 % of the gateway's CPU per call. The exposition is the same: the same names,
    labels, buckets and `_created` samples."""

    def __init__(self):
        self._lock = real_lock()        # held for a few statements, never across a wait
        self._functions = {}            # name -> _Function
        self._statuses = {}             # (name, status) -> [count, created]

    def invoked(self, name, status, fields):
        duration = fields.get("duration_ms")
        worker = fields.get("worker", -1)
        ran = worker is not None and worker >= 0    # else the platform failed before any worker ran it
        with self._lock:
            counted = self._statuses.get((name, status))
            if counted is None:
                counted = self._statuses[(name, status)] = [0, time.time()]
            counted[0] += 1
            function = self._functions.get(name)
            if function is None:
                function = self._functions[name] = _Function()
            if duration is not None:
                self._observe(function, 0, duration)
            if ran:
                for i in (1, 2, 3):
                    self._observe(function, i, fields.get(TIMINGS[i][2]) or 0.0)
                if fields.get("cold"):
                    function.cold += 1

    @staticmethod
    def _observe(function, i, ms):
        seconds = ms / 1000.0
        # A value on a bucket's bound counts in that bucket (le: less than or equal).
        function.buckets[i][bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        function.sums[i] += seconds

    def collect(self):
        with self._lock:
            statuses = [(key, list(counted)) for key, counted in self._statuses.items()]
            functions = [(name, f.created, [list(b) for b in f.buckets], list(f.sums), f.cold)
                         for name, f in self._functions.items()]
        total = CounterMetricFamily("faas_invocations", "invocations answered, by function and HTTP status",
                                    labels=["function", "status"])
        for (name, status), (count, created) in statuses:
            total.add_metric([name, str(status)], count, created=created)
        yield total
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for i, (metric, help_text, _) in enumerate(TIMINGS):
            family = HistogramMetricFamily(metric, help_text, labels=["function"])
            for name, created, buckets, sums, _ in functions:
                cumulative, running = [], 0
                for bound, count in zip(bounds, buckets[i]):
                    running += count
                    cumulative.append((bound, running))
                family.add_metric([name], cumulative, sums[i])
                family.add_sample(metric + "_created", {"function": name}, created)
            yield family
        cold = CounterMetricFamily("faas_cold_starts", "invocations that found their function cold in the worker",
                                   labels=["function"])
        for name, created, _, _, count in functions:
            cold.add_metric([name], count, created=created)
        yield cold


class Metrics:
    """The gateway's metrics in a registry of their own (tests build many apps in one process)."""

    def __init__(self, client=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = InvocationCollector()
        r.register(self.invocations)
        self.deploys = Counter("faas_deploys", "deploys and updates, by language and result",
                               ["lang", "op", "result"], registry=r)
        self.compile = Histogram("faas_compile_seconds", "compile time of C, Rust and Go deploys",
                                 ["lang"], buckets=COMPILE_BUCKETS, registry=r)
        if client is not None:
            r.register(ServerCollector(client))

    def invoked(self, name, status, fields):
        """Count one invocation answer; `fields` as the answer carries them (timings in ms)."""
        self.invocations.invoked(name, status, fields)

    def deployed(self, lang, op, result, compile_ms=None):
        """Count a deploy or update (`op`), its `result` (ok or the error kind), its compile time."""
        self.deploys.labels(lang, op, result).inc()
        if compile_ms is not None:
            self.compile.labels(lang).observe(compile_ms / 1000.0)

    def exposition(self):
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)
