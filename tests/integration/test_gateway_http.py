"""The gateway's HTTP shapes, driven in-process through WSGI (like bottle's own tests), plus one
real gateway process with no server behind it."""

import codecs
import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from support import stop_group, wait_listening

from harness.run.stack import free_port

from reference.config import Limits
from reference.functions.storage import Storage
from reference.gateway.app import make_app
from reference.gateway.parse import decode_input
from reference.wire.errors import CompileError, Unavailable
from reference.wire.jobs import Outcome

from support import ROOT  # noqa: E402
from wsgi_app import HELLO_PY, Answer, Compiled, StandInClient, call, fake_compiler  # noqa: F401


@pytest.fixture
def store(tmp_path):
    return Storage(tmp_path / "functions")


@pytest.fixture
def client():
    return StandInClient()


@pytest.fixture
def app(store, client):
    return make_app(store, client, compile_to_wasm=fake_compiler, precompile=lambda wasm: b"cwasm:" + wasm)


def deploy(app, name="hello", lang="python", code=HELLO_PY, **query):
    q = "&".join("%s=%s" % kv for kv in dict(name=name, lang=lang, **query).items())
    return call(app, "POST", "/deploy", code, query=q)


# -- deploy -----------------------------------------------------------------------------------

def test_deploy_query_form(app, store):
    answer = deploy(app, "hello", "py")
    assert answer.status == 201
    body = answer.json
    assert body["ok"] is True and body["name"] == "hello" and body["lang"] == "python"
    assert body["id"].startswith("hello_") and body["wasm"] is False and body["size"] == len(HELLO_PY)
    assert "dir" not in body
    assert store.code(store.get(body["id"])) == HELLO_PY


def test_deploy_json_form_with_limits(app, store):
    doc = {"name": "test", "lang": "js", "code": "console.log('Test')", "timeout_ms": 250, "memory_mb": 64}
    answer = call(app, "POST", "/deploy", json.dumps(doc), content_type="application/json")
    assert answer.status == 201, answer.json
    assert answer.json["lang"] == "js"
    meta = store.get("test")
    assert meta["timeout_ms"] == 250 and meta["memory_mb"] == 64
    assert store.code(meta) == b"console.log('Test')"


def test_deploy_compiled_language_stores_wasm_and_cwasm(app, store):
    answer = deploy(app, "hi", "c", b"int main(void) { return 0; }")
    assert answer.status == 201, answer.json
    body = answer.json
    assert body["wasm"] is True and body["toolchain"] == "fake-cc"
    # The compiler's own figure is one part; compile_ms is measured around both parts.
    assert body["compiler_ms"] == 3.5 and body["precompile_ms"] >= 0
    assert body["compile_ms"] >= body["precompile_ms"]
    assert body["wasm_size"] == 8
    fn_dir = pathlib.Path(store.get("hi")["dir"])
    assert (fn_dir / "code.wasm").read_bytes() == b"\0asm\1\0\0\0"
    assert (fn_dir / "code.cwasm").read_bytes() == b"cwasm:\0asm\1\0\0\0"


def test_deploy_real_c_compiles(store, client):
    from needs import need_toolchain

    need_toolchain("c")
    app = make_app(store, client)
    answer = deploy(app, "hello", "c", (ROOT / "examples" / "hello.c").read_bytes())
    assert answer.status == 201, answer.json
    assert answer.json["wasm"] is True and answer.json["wasm_size"] > 0
    fn_dir = pathlib.Path(store.get("hello")["dir"])
    assert (fn_dir / "code.wasm").read_bytes()[:4] == b"\0asm"
    assert (fn_dir / "code.cwasm").stat().st_size > 0
    broken = deploy(app, "broken", "c", b"int main(void) { return }")
    assert broken.status == 422 and broken.json["details"]
    assert not store.exists("broken")


@pytest.mark.parametrize("query, body, fragment", [
    ("name=../etc&lang=python", HELLO_PY, "invalid function name"),
    ("name=&lang=python", HELLO_PY, "invalid function name"),
    ("name=%s&lang=python" % ("x" * 65), HELLO_PY, "invalid function name"),
    ("name=ok&lang=cobol", HELLO_PY, "unknown language"),
    ("name=ok", HELLO_PY, "language"),
    ("name=ok&lang=python", b"", "empty"),
    ("name=ok&lang=python&timeout_ms=0", HELLO_PY, "timeout_ms"),
    ("name=ok&lang=python&timeout_ms=999999999", HELLO_PY, "timeout_ms"),
    ("name=ok&lang=python&memory_mb=lots", HELLO_PY, "memory_mb"),
    ("name=ok&lang=python&memory_mb=%C2%B2", HELLO_PY, "memory_mb"),  # '²' is a digit to isdigit()
])
def test_deploy_bad_requests(app, store, query, body, fragment):
    answer = call(app, "POST", "/deploy", body, query=query)
    assert answer.status == 400
    assert answer.json["ok"] is False and fragment in answer.json["error"]
    assert store.list() == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"name": "x", "lang": "py"}',
                                  b'{"name": 1, "lang": "py", "code": "x"}', b"\xff\xfe"])
def test_deploy_malformed_json_is_400(app, body):
    answer = call(app, "POST", "/deploy", body, content_type="application/json")
    assert answer.status == 400 and answer.json["ok"] is False and answer.json["error"]


@pytest.mark.parametrize("query", ["lang=c", "lang=python", ""])
def test_deploy_without_a_name_says_the_name_is_missing(app, store, query):
    answer = call(app, "POST", "/deploy", b"int main(void) { return 0; }", query=query)
    assert answer.status == 400 and "name is missing" in answer.json["error"], answer.json
    assert "POST /deploy?name=N&lang=L" in answer.json["error"]
    assert store.list() == []
    # A JSON object sent without its Content-Type is still read as the JSON form.
    doc = json.dumps({"name": "j", "lang": "python", "code": "print(1)\n"})
    assert call(app, "POST", "/deploy", doc, query=query).status == 201


def test_deploy_checks_the_syntax_of_interpreted_languages_only(store, client):
    checked = []

    def checker(lang, source):
        checked.append(lang)
        if b"broken" in source:
            raise CompileError("syntax error in the %s code: SyntaxError: invalid syntax" % lang,
                               details='File "function.py", line 1\nSyntaxError: invalid syntax')

    app = make_app(store, client, compile_to_wasm=fake_compiler, precompile=bytes, check_syntax=checker)
    for lang in ("python", "js", "php", "html", "c"):
        assert deploy(app, "ok" + lang, lang, b"fine").status == 201
    assert checked == ["python", "js", "php", "html"]    # the checker says what it has nothing to check
    refused = deploy(app, "bad", "python", b"broken")
    assert refused.status == 422 and refused.json["kind"] == "compile_error"
    assert refused.json["details"].startswith('File "function.py"') and not store.exists("bad")
    # An update that does not parse keeps the current version.
    answer = call(app, "PUT", "/function/okpython", b"broken")
    assert answer.status == 422 and store.code(store.get("okpython")) == b"fine"


def test_deploy_conflict_before_compiling(store, client):
    compiled = []

    def counting_compiler(lang, source):
        compiled.append(lang)
        return fake_compiler(lang, source)

    app = make_app(store, client, compile_to_wasm=counting_compiler, precompile=bytes)
    assert deploy(app, "hello", "c", b"int main(){}").status == 201
    again = deploy(app, "hello", "c", b"int main(){}")
    assert again.status == 409
    assert again.json == {"ok": False, "kind": "conflict",
                          "error": "function name 'hello' already exists, please choose another name"}
    assert compiled == ["c"]


def test_deploy_code_too_large(store, client):
    app = make_app(store, client, limits=Limits(code_bytes=100))
    assert deploy(app, "big", "python", b"#" * 101).status == 413
    doc = json.dumps({"name": "big", "lang": "python", "code": "#" * 101})
    answer = call(app, "POST", "/deploy", doc, content_type="application/json")
    assert answer.status == 413 and answer.json["kind"] == "too_large"
    assert deploy(app, "fits", "python", b"#" * 100).status == 201


def test_deploy_compile_error_and_missing_toolchain(app, store):
    failed = deploy(app, "bad", "c", b"syntax error")
    assert failed.status == 422 and failed.json["details"] == "code.c:1: error: expected ';'"
    missing = deploy(app, "bad", "c", b"no toolchain")
    assert missing.status == 503 and "apt-get" in missing.json["install"]
    assert store.list() == []


def test_api_key_protects_deploy_and_optionally_invoke(store, client):
    app = make_app(store, client, api_key="s3cret", invoke_key="s3cret")
    refused = deploy(app, "hello")
    assert refused.status == 401 and refused.json["ok"] is False
    assert refused.headers.get("www-authenticate") == "Bearer"
    wrong = call(app, "POST", "/deploy", HELLO_PY, query="name=hello&lang=py",
                 headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    good = call(app, "POST", "/deploy", HELLO_PY, query="name=hello&lang=py",
                headers={"Authorization": "Bearer s3cret"})
    assert good.status == 201
    assert call(app, "POST", "/invoke", b"", query="fn=hello").status == 401
    assert call(app, "POST", "/invoke", b"", query="fn=hello",
                headers={"Authorization": "Bearer s3cret"}).status == 200
    open_invoke = make_app(store, client, api_key="s3cret")
    assert call(open_invoke, "POST", "/invoke", b"", query="fn=hello").status == 200


# -- invoke -----------------------------------------------------------------------------------

def test_invoke_unknown_function_is_404(app):
    answer = call(app, "POST", "/invoke", b"{}", query="fn=nonexistent")
    assert answer.status == 404 and answer.json == {"ok": False, "kind": "not_found",
                                                    "error": "function not found", "fn": "nonexistent"}
    assert call(app, "POST", "/invoke", b"{}").status == 400


def test_invoke_success_shape(app, client):
    fn_id = deploy(app).json["id"]
    client.outcome = Outcome(stdout=b"Hello from FAAS!\n", stderr=b"warn\xff", worker=3, cold=True,
                             queue_ms=1.5, init_ms=2.0, exec_ms=4.25, truncated=False)
    answer = call(app, "POST", "/invoke", b'{"input":"test data"}', query="fn=" + fn_id)
    assert answer.status == 200
    body = answer.json
    assert body["ok"] is True and body["output"] == "Hello from FAAS!\n"
    assert body["stderr"] == "warn\ufffd" and body["exit_code"] == 0
    assert body["worker"] == 3 and body["cold"] is True and body["truncated"] is False
    assert body["queue_ms"] == 1.5 and body["init_ms"] == 2.0 and body["exec_ms"] == 4.25
    assert body["duration_ms"] >= 0
    assert answer.headers["x-worker"] == "3" and float(answer.headers["x-exec-ms"]) == 4.25
    assert float(answer.headers["x-queue-ms"]) == 1.5
    meta, payload = client.calls[-1]
    assert meta["id"] == fn_id and os.path.isdir(meta["dir"]) and payload == b"test data"


def test_invoke_by_plain_name(app, client):
    deploy(app, "byname")
    assert call(app, "POST", "/invoke", b"x", query="fn=byname").status == 200
    assert client.calls[-1][0]["name"] == "byname"


@pytest.mark.parametrize("body, expected", [
    (b'{"input": "test data"}', b"test data"),
    ('{"input": "h\u00e9"}'.encode(), "h\u00e9".encode()),
    (b'{"input": {"a": 1, "b": [2, 3]}}', b'{"a": 1, "b": [2, 3]}'),
    ('{"input": ["\u00e9"]}'.encode(), b'["\\u00e9"]'),
    (b'{"input": 42}', b"42"),
    (b'{"input": null}', b"null"),
    (b'{"other": 1}', b'{"other": 1}'),
    (b'[1, 2]', b'[1, 2]'),
    (b"plain text", b"plain text"),
    (b"\xff\x00binary", b"\xff\x00binary"),
    (b"", b""),
])
def test_input_decoding_rules(app, client, body, expected):
    fn_id = deploy(app).json["id"]
    assert call(app, "POST", "/invoke", body, query="fn=" + fn_id).status == 200
    assert client.calls[-1][1] == expected
    assert decode_input(body) == expected


def _json_rule(data):
    """The contract's input rule by the json module alone, what decode_input must agree with."""
    try:
        value = json.loads(data)["input"]   # TypeError: not an object; KeyError: no "input"
    except (ValueError, TypeError, KeyError):
        return data
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")


def _bodies():
    """Every first byte before texts that are objects, not objects, or neither; and an object
    with "input" in each encoding json.loads detects, with and without a byte order mark and
    leading whitespace."""
    tails = [b'{"input": "x"}', b'"input": "x"}', b"", b"\x00", b"\x00\x00\x00", b"{\x00", b"plain"]
    for first in range(256):
        for tail in tails:
            yield bytes([first]) + tail
    doc = '{"input": "h\u00e9", "n": 1}'
    for text in (doc, " " + doc, "\n\t " + doc, doc + " "):
        for encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                         "utf-32-be"):
            yield text.encode(encoding)
        yield codecs.BOM_UTF16_BE + text.encode("utf-16-be")     # "utf-16" writes the machine's order
        yield codecs.BOM_UTF32_BE + text.encode("utf-32-be")


def test_decode_input_agrees_with_the_json_module_on_every_first_byte():
    """The fast paths (orjson, and a first byte that cannot open an object) give what the json
    module's rule gives, for bodies that are JSON objects in any encoding it reads and for
    those that are not."""
    bodies = list(_bodies())
    decoded = [body for body in bodies if _json_rule(body) != body]
    assert len(decoded) >= 32      # the encoded objects do decode: the comparison is not vacuous
    for body in bodies:
        assert decode_input(body) == _json_rule(body), body


def test_invoke_payload_too_large(store, client):
    app = make_app(store, client, limits=Limits(payload_bytes=10))
    deploy(app)
    answer = call(app, "POST", "/invoke", b"x" * 11, query="fn=hello")
    assert answer.status == 413 and answer.json["kind"] == "too_large"
    assert client.calls == []
    assert call(app, "POST", "/invoke", b"x" * 10, query="fn=hello").status == 200


@pytest.mark.parametrize("outcome, status, kind, fragment", [
    (Outcome(error="timeout", message="timed out"), 504, "timeout", "750 ms"),
    (Outcome(error="memory", message="oom"), 500, "memory_limit", "memory limit of 64 MiB"),
    (Outcome(error="runtime", message="wasm trap: unreachable"), 500, "function_error", "wasm trap"),
    (Outcome(exit_code=3, stdout=b"partial", stderr=b"boom"), 500, "function_error", "exited with code 3"),
])
def test_invoke_failure_shapes(store, client, outcome, status, kind, fragment):
    app = make_app(store, client)
    call(app, "POST", "/deploy", HELLO_PY, query="name=f&lang=py&timeout_ms=750&memory_mb=64")
    client.outcome = outcome
    answer = call(app, "POST", "/invoke", b"in", query="fn=f")
    assert answer.status == status
    body = answer.json
    assert body["ok"] is False and body["kind"] == kind and fragment in body["error"]
    assert body["exit_code"] == outcome.exit_code
    assert body["output"] == outcome.stdout.decode() and body["stderr"] == outcome.stderr.decode()


def test_invoke_platform_failure_is_503(app, client):
    deploy(app)
    client.error = Unavailable("server unavailable: no server at /nowhere")
    answer = call(app, "POST", "/invoke", b"", query="fn=hello")
    assert answer.status == 503 and answer.json["error"].startswith("server unavailable")


def test_unexpected_exception_is_json_500_without_traceback(app, client):
    deploy(app)
    client.error = RuntimeError("secret internals")
    answer = call(app, "POST", "/invoke", b"", query="fn=hello")
    assert answer.status == 500 and answer.json["ok"] is False
    assert b"secret" not in answer.raw and b"Traceback" not in answer.raw


# -- reading, status, routing -------------------------------------------------------------------

def test_get_function_and_functions(app):
    fn_id = deploy(app, "hello").json["id"]
    deploy(app, "page", "html", b"<h1>hi</h1>")
    for key in ("hello", fn_id):
        answer = call(app, "GET", "/function/" + key)
        assert answer.status == 200
        body = answer.json
        assert body["ok"] is True and body["id"] == fn_id and body["name"] == "hello"
        assert body["lang"] == "python" and body["size"] == len(HELLO_PY)
        assert body["code"] == HELLO_PY.decode() and "sha256" in body and "dir" not in body
    assert call(app, "GET", "/function/nope").status == 404
    listing = call(app, "GET", "/functions").json
    assert listing["ok"] is True and listing["count"] == 2
    assert [f["name"] for f in listing["functions"]] == ["hello", "page"]
    assert all("code" not in f and "dir" not in f for f in listing["functions"])


def test_run_html_and_text(app, client):
    deploy(app, "page", "html", b"<h1>hi</h1>")
    page = call(app, "GET", "/run/page")
    assert page.status == 200 and page.raw == b"<h1>hi</h1>"
    assert page.headers["content-type"].startswith("text/html")
    deploy(app, "echo")
    client.outcome = Outcome(stdout=b"echoed")
    text = call(app, "GET", "/run/echo", query="input=abc")
    assert text.status == 200 and text.raw == b"echoed"
    assert text.headers["content-type"].startswith("text/plain")
    assert client.calls[-1][1] == b"abc"


def test_stats_and_health(store):
    up = make_app(store, StandInClient())
    stats = call(up, "GET", "/stats")
    assert stats.status == 200 and stats.json["ok"] is True and stats.json["strategy"] == "RR"
    assert "req" not in stats.json
    health = call(up, "GET", "/health")
    assert health.status == 200 and health.json["ok"] is True and health.json["workers"] == 2

    no_balancer = make_app(store, StandInClient(health={"server": True, "balancer": False, "workers": 2},
                                                stats={"strategy": "RR", "balancer": False}))
    answer = call(no_balancer, "GET", "/health")
    assert answer.status == 503 and answer.json["down"] == ["balancer"] and "balancer" in answer.json["error"]
    assert call(no_balancer, "GET", "/stats").status == 503

    down = make_app(store, StandInClient(error=Unavailable("server unavailable")))
    answer = call(down, "GET", "/health")
    assert answer.status == 503 and answer.json["down"] == ["server"]
    assert call(down, "GET", "/stats").status == 503


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nowhere", 404), ("POST", "/function/x/y", 404),
    ("GET", "/deploy", 405), ("DELETE", "/invoke", 405), ("PUT", "/functions", 405),
    ("POST", "/health", 405),
])
def test_routing_errors_are_json(app, method, path, status):
    answer = call(app, method, path)
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json["ok"] is False and answer.json["error"]


@pytest.mark.parametrize("path", ["/\x80", "/\xff", "/x\x80", "/static/\x80", "/run/hel\x80lo", "/function/hel\xc3lo"])
def test_a_path_that_is_not_utf8_names_no_endpoint(app, client, path):
    # PATH_INFO is the path's bytes as latin-1; bottle would drop what does not decode and
    # route the rest (/\x80 to the dashboard, /run/hel\x80lo to hello).
    assert deploy(app, "hello").status == 201
    answer = call(app, "GET", path)
    assert answer.status == 404 and answer.headers["content-type"].startswith("application/json")
    assert answer.json["ok"] is False and "not valid UTF-8" in answer.json["error"]
    assert client.calls == []
    assert call(app, "GET", "/").status == 200 and call(app, "GET", "/\xc3\xa9").status == 404


# -- the real gateway process -------------------------------------------------------------------

def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())



def test_real_gateway_without_server(tmp_path):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reference", "gateway", "--port", str(port),
             "--functions", str(tmp_path / "functions"), "--server-sock", str(tmp_path / "srv.sock")],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, start_new_session=True)
    try:
        wait_listening(port, proc, lambda: log_path.read_text(errors="replace"))
        status, body = http("POST", url + "/deploy?name=greet&lang=python", HELLO_PY)
        assert status == 201, body
        status, body = http("POST", url + "/invoke?fn=" + body["id"], b'{"input":"x"}')
        assert status == 503 and "server unavailable" in body["error"]
        status, body = http("GET", url + "/health")
        assert status == 503 and "server" in body["down"]
        assert "listening on http://127.0.0.1:%d" % port in log_path.read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop_group(proc)
    assert (tmp_path / "functions" / ".names" / "greet").is_symlink()


# -- lifecycle shapes -------------------------------------------------------------------------

def test_update_that_does_not_compile_keeps_the_current_version(app, store):
    first = deploy(app, "hi", "c", b"int main(void) { return 0; }").json
    broken = call(app, "PUT", "/function/hi", b"syntax error")
    assert broken.status == 422 and broken.json["details"]
    missing = call(app, "PUT", "/function/hi", b"no toolchain")
    assert missing.status == 503 and missing.json["kind"] == "toolchain_missing"
    assert store.get("hi")["id"] == first["id"] and len(store.versions("hi")) == 1
    good = call(app, "PUT", "/function/hi", b"int main(void) { return 1; }")
    assert good.status == 200 and good.json["version"] == 2 and good.json["wasm"] is True
    assert "dir" not in good.json and good.json["previous"] == first["id"]


def test_update_and_delete_need_the_api_key(store, client):
    app = make_app(store, client, api_key="s3cret")
    bearer = {"Authorization": "Bearer s3cret"}
    assert call(app, "POST", "/deploy", HELLO_PY, query="name=f&lang=py", headers=bearer).status == 201
    assert call(app, "PUT", "/function/f", HELLO_PY).status == 401
    assert call(app, "DELETE", "/function/f").status == 401
    assert call(app, "PUT", "/function/f", b"print(2)", headers=bearer).status == 200
    assert call(app, "DELETE", "/function/f", headers=bearer).json["ok"] is True
    assert store.get("f") is None


def test_update_by_id_or_bad_name_is_refused(app):
    fn_id = deploy(app, "hello").json["id"]
    assert call(app, "PUT", "/function/" + fn_id, HELLO_PY).status == 404  # a name, not an id
    assert call(app, "DELETE", "/function/..").status in (400, 404)
    answer = call(app, "PUT", "/function/hello", b'{"code": 5}', content_type="application/json")
    assert answer.status == 400 and "code" in answer.json["error"]


def test_a_function_failure_is_mapped_by_one_pure_function():
    from reference.gateway.calls import answer_for

    meta = {"id": "f_1", "name": "f", "timeout_ms": 750, "memory_mb": 64}
    assert answer_for(meta, Outcome(stdout=b"hi"), 1.0)[0] == 200
    for outcome, status, kind in ((Outcome(error="timeout"), 504, "timeout"),
                                  (Outcome(error="memory"), 500, "memory_limit"),
                                  (Outcome(error="runtime", message="trap"), 500, "function_error"),
                                  (Outcome(exit_code=2), 500, "function_error")):
        got_status, body = answer_for(meta, outcome, 1.0)   # returns, never raises
        assert (got_status, body["kind"], body["ok"]) == (status, kind, False)
        assert body["duration_ms"] == 1.0 and "output" in body
