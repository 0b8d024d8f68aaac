"""Prometheus metrics of the gateway (`GET /metrics`): invocations, durations, cold starts,
deploys and compile times, plus the server's queue and workers read at scrape time.

The gateway is the one process that sees every invocation's answer and every deploy, and it
is a single process (gevent or waitress serves it), so one in-process registry is exact:
prometheus_client's multiprocess mode is for several processes serving one app, not needed here.
Worker-side figures (cold, init_ms, exec_ms, queue_ms) arrive in each answer from the server.
"""

import logging

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

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


class Metrics:
    """The gateway's metrics in a registry of their own (tests build many apps in one process)."""

    def __init__(self, client=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("faas_invocations", "invocations answered, by function and HTTP status",
                                   ["function", "status"], registry=r)
        self.duration = Histogram("faas_invocation_duration_seconds", "gateway-side total time of an invocation",
                                  ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.queue = Histogram("faas_invocation_queue_seconds", "time an invocation waited for a worker",
                               ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.init = Histogram("faas_invocation_init_seconds", "time to load or start the function in the worker",
                              ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.exec = Histogram("faas_invocation_exec_seconds", "time the function ran in the worker",
                              ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.cold = Counter("faas_cold_starts", "invocations that found their function cold in the worker",
                            ["function"], registry=r)
        self.deploys = Counter("faas_deploys", "deploys and updates, by language and result",
                               ["lang", "op", "result"], registry=r)
        self.compile = Histogram("faas_compile_seconds", "compile time of C, Rust and Go deploys",
                                 ["lang"], buckets=COMPILE_BUCKETS, registry=r)
        if client is not None:
            r.register(ServerCollector(client))
        # labels() builds and looks up its child under a lock each time: about a sixth of an
        # in-process invoke. The children of a function are found once and kept here.
        self._per_function, self._per_status = {}, {}

    def invoked(self, name, status, fields):
        """Count one invocation answer; `fields` as the answer carries them (timings in ms)."""
        counter = self._per_status.get((name, status))
        if counter is None:
            counter = self._per_status[(name, status)] = self.invocations.labels(name, str(status))
        counter.inc()
        children = self._per_function.get(name)
        if children is None:
            children = self._per_function[name] = tuple(
                metric.labels(name) for metric in (self.duration, self.queue, self.init, self.exec, self.cold))
        duration, queue, init, exec_, cold = children
        if fields.get("duration_ms") is not None:
            duration.observe(fields["duration_ms"] / 1000.0)
        if fields.get("worker", -1) is None or fields.get("worker", -1) < 0:
            return  # the platform failed before any worker ran it: no worker-side figures
        queue.observe((fields.get("queue_ms") or 0.0) / 1000.0)
        init.observe((fields.get("init_ms") or 0.0) / 1000.0)
        exec_.observe((fields.get("exec_ms") or 0.0) / 1000.0)
        if fields.get("cold"):
            cold.inc()

    def deployed(self, lang, op, result, compile_ms=None):
        """Count a deploy or update (`op`), its `result` (ok or the error kind), its compile time."""
        self.deploys.labels(lang, op, result).inc()
        if compile_ms is not None:
            self.compile.labels(lang).observe(compile_ms / 1000.0)

    def exposition(self):
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)
