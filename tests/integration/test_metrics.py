"""GET /metrics: the Prometheus text format, counted from real invocations on the real stack,
and the deploy and server-down figures in-process."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import deploy, http, invoke
from wsgi_app import StandInClient, call, fake_compiler

from reference.functions.storage import Storage
from reference.gateway.app import make_app
from reference.wire.errors import Unavailable


def samples(text):
    """{(sample name, frozenset of labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_real_invocations(shared_stack):
    url = shared_stack.url
    deploy(url, "m-ok", "python", b"print('hi')\n")
    deploy(url, "m-fail", "python", b"import sys\nsys.exit(2)\n")
    answers = [invoke(url, "m-ok", "x")[1] for _ in range(3)]
    assert invoke(url, "m-fail", "")[0] == 500
    assert invoke(url, "ghost", "")[0] == 404  # not a function: not counted under any function

    status, text, headers = http("GET", url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    found = samples(text)
    assert value(found, "faas_invocations_total", function="m-ok", status="200") == 3
    assert value(found, "faas_invocations_total", function="m-fail", status="500") == 1
    for hist in ("duration", "queue", "exec"):
        assert value(found, "faas_invocation_%s_seconds_count" % hist, function="m-ok") == 3
    assert value(found, "faas_cold_starts_total", function="m-ok") == sum(a["cold"] for a in answers)
    assert value(found, "faas_deploys_total", lang="python", op="deploy", result="ok") >= 2
    assert value(found, "faas_server_up") == 1
    assert value(found, "faas_workers") == 2
    assert 0 <= value(found, "faas_workers_busy") <= 2 and value(found, "faas_queue_length") >= 0


def test_invocation_records_on_the_real_stack(shared_stack):
    url = shared_stack.url
    deploy(url, "rec", "python", b"import sys\nprint(sys.stdin.read() * 3)\n")
    invoke(url, "rec", "ab")
    invoke(url, "rec", "cd")
    status, body, _ = http("GET", url + "/function/rec/invocations")
    assert status == 200 and body["count"] == 2 and ".gateway.sqlite" in body["kept"]   # durable now
    newest = body["invocations"][0]
    assert newest["status"] == 200 and newest["kind"] == "ok" and newest["output_bytes"] == len("cdcdcd\n")
    assert newest["worker"] in (0, 1) and newest["truncated"] is False and isinstance(newest["cold"], bool)
    assert newest["total_ms"] >= newest["exec_ms"] >= 0 and newest["queue_ms"] >= 0 and newest["init_ms"] >= 0
    assert body["invocations"][1]["time"] <= newest["time"]
    assert http("GET", url + "/function/ghost/invocations")[0] == 404


def test_deploys_compile_time_and_server_down_in_process(tmp_path):
    app = make_app(Storage(tmp_path), StandInClient(error=Unavailable("server unavailable")),
                   compile_to_wasm=fake_compiler, precompile=lambda wasm: wasm)
    first = call(app, "POST", "/deploy", b"int main(){}", query="name=c1&lang=c")
    assert first.status == 201
    assert call(app, "POST", "/deploy", b"syntax error", query="name=c2&lang=c").status == 422
    update = call(app, "PUT", "/function/c1", b"int main(){return 0;}")
    assert update.status == 200
    assert call(app, "POST", "/invoke", b"", query="fn=c1").status == 503
    answer = call(app, "GET", "/metrics")
    assert answer.status == 200
    found = samples(answer.raw.decode())
    assert value(found, "faas_deploys_total", lang="c", op="deploy", result="ok") == 1
    assert value(found, "faas_deploys_total", lang="c", op="deploy", result="compile_error") == 1
    assert value(found, "faas_deploys_total", lang="c", op="update", result="ok") == 1
    assert value(found, "faas_compile_seconds_count", lang="c") == 2
    # The whole compile as each deploy answered it (compile_ms, the compiler and the precompile).
    answered_ms = first.json["compile_ms"] + update.json["compile_ms"]
    assert answered_ms >= 0 and first.json["compiler_ms"] == 3.5
    assert value(found, "faas_compile_seconds_sum", lang="c") == pytest.approx(answered_ms / 1000, abs=1e-4)
    assert value(found, "faas_invocations_total", function="c1", status="503") == 1
    assert value(found, "faas_invocation_exec_seconds_count", function="c1") == 0  # never ran
    assert value(found, "faas_server_up") == 0
    app.calls.close()
