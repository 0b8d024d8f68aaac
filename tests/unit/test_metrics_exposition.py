"""The gateway's own invocation collector (reference/gateway/metrics.py) against
prometheus_client's Counter and Histogram fed the same invocations: the same exposition."""

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reference.gateway.metrics import DURATION_BUCKETS, TIMINGS, Metrics


def reference_registry(invocations):
    """prometheus_client's own objects, as the gateway used them before its collector."""
    r = CollectorRegistry()
    total = Counter("faas_invocations", "invocations answered, by function and HTTP status",
                    ["function", "status"], registry=r)
    hists = [Histogram(name, text, ["function"], buckets=DURATION_BUCKETS, registry=r) for name, text, _ in TIMINGS]
    cold = Counter("faas_cold_starts", "invocations that found their function cold in the worker",
                   ["function"], registry=r)
    for name, status, fields in invocations:
        total.labels(name, str(status)).inc()
        children = [h.labels(name) for h in hists] + [cold.labels(name)]
        if fields.get("duration_ms") is not None:
            children[0].observe(fields["duration_ms"] / 1000.0)
        if fields.get("worker", -1) is None or fields.get("worker", -1) < 0:
            continue
        for i in (1, 2, 3):
            children[i].observe((fields.get(TIMINGS[i][2]) or 0.0) / 1000.0)
        if fields.get("cold"):
            children[4].inc()
    return r


def samples(text, skip_created=True):
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if skip_created and s.name.endswith("_created"):
                found[(s.name, frozenset(s.labels.items()))] = "created"
                continue
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def some_invocations(rng, n=400):
    out = []
    for _ in range(n):
        name = rng.choice(["a", "b", "c-1"])
        ran = rng.random() > 0.2
        fields = {"duration_ms": rng.choice([0.5, 1.0, 2.5, 7.0, 100.0, 1e5, rng.uniform(0, 70_000)])}
        if ran:
            fields.update(worker=rng.randrange(4), queue_ms=rng.uniform(0, 30), init_ms=rng.choice([0.0, None, 40.0]),
                          exec_ms=rng.choice([1.0, 5.0, rng.uniform(0, 500)]), cold=rng.random() < 0.3)
        else:
            fields["worker"] = rng.choice([-1, None])
        out.append((name, rng.choice([200, 500, 504, 503]), fields))
    return out


def test_the_collector_exposes_what_prometheus_client_would():
    invocations = some_invocations(random.Random(7))
    metrics = Metrics()
    for name, status, fields in invocations:
        metrics.invoked(name, status, fields)
    ours = samples(metrics.exposition().decode())
    theirs = samples(generate_latest(reference_registry(invocations)).decode())
    ours = {k: v for k, v in ours.items() if not k[0].startswith(("faas_deploys", "faas_compile"))}
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == (value if isinstance(value, str) else pytest.approx(value)), key


def test_a_value_on_a_bound_counts_in_that_bucket():
    metrics = Metrics()
    metrics.invoked("f", 200, {"duration_ms": 1.0, "worker": 0, "queue_ms": 0.0, "exec_ms": 2.5, "init_ms": 0.0})
    found = samples(metrics.exposition().decode())
    assert found[("faas_invocation_duration_seconds_bucket", frozenset({"function": "f", "le": "0.001"}.items()))] == 1
    assert found[("faas_invocation_exec_seconds_bucket", frozenset({"function": "f", "le": "0.001"}.items()))] == 0
    assert found[("faas_invocation_exec_seconds_bucket", frozenset({"function": "f", "le": "0.0025"}.items()))] == 1
