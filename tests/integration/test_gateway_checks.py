"""Who may ask the gateway what: the Origin check on writes (403), the Host check (421), the
sandbox CSP of /run pages, nosniff on every answer, the API and invoke keys, the bound on kept
answers (429), and names that would shadow an id (409). In-process through WSGI for the HTTP
shapes; against a real `minifaas up` for what a browser or curl would really send."""

import os
import socket
import threading

import pytest
from support import deploy as deploy_real
from support import http
from wsgi_app import HELLO_PY, StandInClient, call, fake_compiler

from reference.config import Limits
from reference.functions.storage import Storage
from reference.gateway import checks
from reference.gateway.app import make_app
from reference.gateway.calls import Calls
from reference.gateway.metrics import Metrics
from reference.gateway.records import InvocationRecords
from reference.wire.errors import Overloaded
from reference.wire.jobs import Outcome

EVIL = "http://evil.example"


@pytest.fixture
def store(tmp_path):
    return Storage(tmp_path / "functions")


def build(store, **options):
    return make_app(store, StandInClient(), compile_to_wasm=fake_compiler, precompile=bytes, **options)


def deploy(app, name="f", headers=None, code=HELLO_PY, content_type=None):
    return call(app, "POST", "/deploy", code, query="name=%s&lang=py" % name, headers=headers,
                content_type=content_type)


# -- Origin: writes from another origin's page ------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Origin": EVIL},
    {"Origin": "null"},                                       # a sandboxed page, e.g. /run/NAME
    {"Origin": "http://127.0.0.1:9999", "Host": "127.0.0.1:8080"},   # another port: another origin
    {"Origin": "http://127.0.0.1", "Host": "127.0.0.1:8080"},       # port 80: another origin
    {"Origin": "ftp://127.0.0.1:8080", "Host": "127.0.0.1:8080"},    # not a web origin
    {"Origin": "http://localhost:8080", "Host": "127.0.0.1:8080"},   # another name
    {"Origin": "http://127.0.0.1:8080/", "Host": "127.0.0.1:8080"},  # not an origin at all
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},                          # a sibling subdomain or port
    {"Sec-Fetch-Site": "same-origin", "Origin": EVIL},
])
def test_writes_from_another_origin_are_403_and_change_nothing(store, headers):
    app = build(store)
    assert deploy(app, "kept").status == 201
    kept_id = store.get("kept")["id"]
    # The attack of the issue: a cross-site form posts text/plain to /deploy.
    answer = deploy(app, "planted", headers=headers, content_type="text/plain")
    assert answer.status == 403, answer.json
    assert answer.json["ok"] is False and answer.json["kind"] == "forbidden"
    assert "another origin" in answer.json["error"]
    assert call(app, "PUT", "/function/kept", b"print(2)", headers=headers).status == 403
    assert call(app, "DELETE", "/function/kept", headers=headers).status == 403
    assert store.get("planted") is None and store.get("kept")["id"] == kept_id


@pytest.mark.parametrize("headers", [
    {},                                                       # curl, scripts
    {"Origin": "http://127.0.0.1:8080", "Host": "127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://localhost", "Host": "localhost"},
    {"Origin": "http://LOCALHOST:80", "Host": "localhost"},   # the default port, either way
    {"Origin": "http://[::1]:8080", "Host": "[::1]:8080"},
    {"Sec-Fetch-Site": "none"},                               # typed by the user
])
def test_same_origin_and_no_origin_writes_pass(store, headers):
    app = build(store)
    assert deploy(app, "f", headers=headers).status == 201
    assert call(app, "PUT", "/function/f", b"print(2)", headers=headers).status == 200
    assert call(app, "DELETE", "/function/f", headers=headers).status == 200


def test_a_proxy_with_a_public_name_is_same_origin(store):
    app = build(store, public_names=("faas.example.com",))
    mine = {"Origin": "https://faas.example.com", "Host": "faas.example.com"}
    assert deploy(app, "f", headers=mine).status == 201
    other = {"Origin": "https://evil.example", "Host": "faas.example.com"}
    assert deploy(app, "g", headers=other).status == 403


def test_reads_and_invocations_are_not_writes(store):
    """The Origin check is for writes; a cross-origin page cannot read the answers anyway
    (no CORS headers), and invoking is what functions are for (--invoke-key guards it)."""
    app = build(store)
    assert deploy(app).status == 201
    assert call(app, "GET", "/functions", headers={"Origin": EVIL}).status == 200
    assert call(app, "POST", "/invoke", b"", query="fn=f", headers={"Origin": EVIL}).status == 200


# -- Host: DNS rebinding ----------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example",
                                  "127.0.0.1:abc", "127.0.0.1:0", "user@127.0.0.1", "[::1", "::1",
                                  "0.0.0.0:8080", "10.1.2.4", ""])
def test_a_host_that_is_not_ours_is_421_on_every_route(store, host):
    app = build(store, host="10.1.2.3")
    for method, path in (("GET", "/health"), ("GET", "/"), ("POST", "/deploy"), ("GET", "/nowhere"),
                         ("GET", "/static/dashboard.js"), ("GET", "/run/f")):
        answer = call(app, method, path, HELLO_PY, query="name=f&lang=py", headers={"Host": host})
        assert answer.status == 421, (method, path, answer.status)
        assert answer.json["ok"] is False and answer.json["kind"] == "misdirected"
        assert "--public-name" in answer.json["error"]
    assert store.get("f") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1",
                                  "localhost.", "[::1]", "[::1]:8080", "10.1.2.3", "10.1.2.3:80",
                                  "faas.example.com:443"])
def test_our_own_names_pass(store, host):
    app = build(store, host="10.1.2.3", public_names=("faas.example.com",))
    answer = call(app, "GET", "/health", headers={"Host": host})
    assert answer.status == 200, answer.json


def test_wildcard_host_takes_the_machines_addresses_and_name():
    names = checks.HostNames("0.0.0.0")
    assert names.allows(socket.gethostname()) and names.allows(socket.gethostname() + ":8080")
    # Linux owns all of 127.0.0.0/8; 192.0.2.0/24 is reserved for documentation: nobody's.
    assert names.allows("127.0.0.2:8080") and not names.allows("192.0.2.1")
    assert not names.allows("0.0.0.0") and not names.allows("evil.example")
    assert not checks.HostNames("127.0.0.1").allows("127.0.0.2")
    assert checks.HostNames("::").allows("[::1]:8080")


def test_a_host_remembered_as_ours_stays_the_only_kind_remembered(store, monkeypatch):
    # HostNames remembers Host headers it allowed (a per-call saving); what it refused, and
    # what it would refuse, is refused every time, and past its bound it parses as before.
    monkeypatch.setattr(checks, "KNOWN_HOSTS_MAX", 3)
    app = build(store, host="10.1.2.3")
    for _ in range(3):
        assert call(app, "GET", "/health", headers={"Host": "10.1.2.3:8080"}).status == 200
        assert call(app, "GET", "/health", headers={"Host": "evil.example"}).status == 421
        assert call(app, "GET", "/health", headers={"Host": "10.1.2.3.evil.example"}).status == 421
    names = checks.HostNames("127.0.0.1")
    hosts = ["localhost:%d" % port for port in range(8080, 8090)]
    assert all(names.allows(h) for h in hosts) and all(names.allows(h) for h in hosts)
    assert len(names._known) == 3 and not names.allows("evil.example") and not names.allows("")
    assert "evil.example" not in names._known and not names.allows("evil.example")


def test_query_answers_are_those_of_their_own_query_string(store):
    # parse.query remembers its answers by query string and name: one string's answer never
    # leaks into another's, and a parameter that is not UTF-8 is refused each time it comes.
    app = build(store)
    assert deploy(app, "f").status == 201 and deploy(app, "g").status == 201
    for _ in range(2):
        for fn in ("f", "g"):
            answer = call(app, "POST", "/invoke", b"{}", query="fn=" + fn, content_type="application/json")
            assert answer.status == 200, answer.json
        answer = call(app, "POST", "/invoke", b"{}", query="fn=nope", content_type="application/json")
        assert answer.status == 404 and answer.json["fn"] == "nope"
        answer = call(app, "POST", "/invoke", b"{}", query="fn=f%ff", content_type="application/json")
        assert answer.status == 400 and "not valid UTF-8" in answer.json["error"]
        answer = call(app, "POST", "/invoke", b"{}", query="fn=f&async=1", content_type="application/json")
        assert answer.status == 202 and answer.json["state"]
    long_query = "fn=f&pad=" + "x" * 300          # longer than kept: answered all the same
    answer = call(app, "POST", "/invoke", b"{}", query=long_query, content_type="application/json")
    assert answer.status == 200


def test_a_421_does_not_tell_a_rebinding_page_our_names(store):
    app = build(store, host="0.0.0.0", public_names=("internal.example",))
    answer = call(app, "GET", "/health", headers={"Host": "evil.example"})
    assert answer.status == 421
    assert socket.gethostname().encode() not in answer.raw and b"internal.example" not in answer.raw


def test_public_names_are_checked():
    for bad in ("faas.example.com:443", "a b", "x/y", ""):
        with pytest.raises(ValueError):
            checks.public_name(bad)
    assert checks.public_name("FAAS.example.com.") == "faas.example.com"
    assert checks.public_name("2001:db8::1") == "[2001:db8::1]"


# -- headers of every answer ------------------------------------------------------------------

def test_every_answer_says_nosniff_once(store, monkeypatch):
    app = build(store)
    call(app, "POST", "/deploy", b"<p>hi</p>", query="name=page&lang=html")
    answers = [call(app, "GET", "/"), call(app, "GET", "/static/dashboard.js"), call(app, "GET", "/health"),
               call(app, "GET", "/nowhere"), call(app, "DELETE", "/invoke"), call(app, "POST", "/deploy"),
               call(app, "GET", "/run/page"), call(app, "GET", "/metrics"),
               call(app, "GET", "/health", headers={"Host": "evil.example"}),
               call(app, "POST", "/deploy", HELLO_PY, query="name=x&lang=py", headers={"Origin": EVIL})]
    monkeypatch.setattr(store, "list", lambda: 1 / 0)   # a crash in a handler
    answers.append(call(app, "GET", "/functions"))
    assert [a.status for a in answers] == [200, 200, 200, 404, 405, 400, 200, 200, 421, 403, 500]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.header_list.count(("X-Content-Type-Options", "nosniff")) == 1


def test_run_pages_are_sandboxed_and_the_dashboard_is_not(store):
    app = build(store)
    call(app, "POST", "/deploy", b"<script>fetch('/deploy')</script>", query="name=page&lang=html")
    deploy(app, "echo")
    for path, status in (("/run/page", 200), ("/run/echo", 200), ("/run/missing", 404)):
        answer = call(app, "GET", path)
        assert answer.status == status
        assert answer.headers["content-security-policy"] == "sandbox allow-scripts", path
    assert "content-security-policy" not in call(app, "GET", "/").headers
    assert "content-security-policy" not in call(app, "GET", "/function/page").headers


# -- keys -------------------------------------------------------------------------------------

def bearer(key):
    return {"Authorization": "Bearer " + key}


def test_with_an_api_key_reading_code_needs_it_too(store):
    app = build(store, api_key="adm")
    assert deploy(app, headers=bearer("adm")).status == 201
    for path in ("/function/f", "/functions", "/function/f/invocations"):
        refused = call(app, "GET", path)
        assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "code" not in refused.json and "functions" not in refused.json
        assert call(app, "GET", path, headers=bearer("wrong")).status == 401
        assert call(app, "GET", path, headers=bearer("adm")).status == 200
    for path in ("/health", "/stats", "/metrics", "/languages", "/"):
        assert call(app, "GET", path).status == 200, path
    assert call(app, "POST", "/invoke", b"", query="fn=f").status == 200   # no invoke key: open


def test_an_invoke_key_guards_invoke_run_and_calls(store):
    app = build(store, api_key="adm", invoke_key="inv")
    assert deploy(app, headers=bearer("inv")).status == 401   # the invoke key does not deploy
    assert deploy(app, headers=bearer("adm")).status == 201
    for key, status in ((None, 401), ("wrong", 401), ("inv", 200), ("adm", 200)):
        headers = bearer(key) if key else {}
        assert call(app, "POST", "/invoke", b"", query="fn=f", headers=headers).status == status
        assert call(app, "GET", "/run/f", headers=headers).status == status
        assert call(app, "POST", "/invoke", b"", query="fn=f&async=1", headers=headers).status == (
            401 if status == 401 else 202)
    accepted = call(app, "POST", "/invoke", b"", query="fn=f&async=1", headers=bearer("inv")).json
    app.calls.get(accepted["call_id"]).done.wait(10)
    assert call(app, "GET", "/call/" + accepted["call_id"]).status == 401
    assert call(app, "GET", "/call/" + accepted["call_id"], headers=bearer("inv")).json["status"] == 200
    app.calls.close()


def test_an_invoke_key_alone_leaves_deploy_open(store):
    app = build(store, invoke_key="inv")
    assert deploy(app).status == 201
    assert call(app, "GET", "/function/f").status == 200
    assert call(app, "POST", "/invoke", b"", query="fn=f").status == 401


# -- names that would shadow an id ------------------------------------------------------------

def test_a_name_that_is_another_functions_id_is_409(store):
    app = build(store)
    first = deploy(app, "hello").json
    answer = deploy(app, first["id"])
    assert answer.status == 409 and answer.json["kind"] == "conflict"
    assert "is the id of a version of function 'hello'" in answer.json["error"]
    assert answer.json["owner"] == "hello"
    assert call(app, "GET", "/function/" + first["id"]).json["name"] == "hello"
    # An old version's id is refused as well, for as long as the version is kept.
    assert call(app, "PUT", "/function/hello", b"print(2)").status == 200
    assert deploy(app, first["id"]).status == 409
    # Once the function is deleted its ids are free names.
    assert call(app, "DELETE", "/function/hello").status == 200
    assert deploy(app, first["id"]).status == 201


# -- kept answers: bounded by count and size, 429 when full -----------------------------------

class HeldServer:
    """A stand-in server whose calls wait until released, and answer their input as output."""

    def __init__(self):
        self.release = threading.Event()

    def invoke(self, meta, payload, limits=None):
        self.release.wait(30)
        return Outcome(stdout=payload, worker=0)

    def stats(self):
        return {"strategy": "RR", "queue": 0, "workers": [], "balancer": True}


META = {"id": "f_1", "name": "f", "timeout_ms": 1000, "memory_mb": 64}


def test_kept_answers_are_bounded_by_size_and_unfetched_ones_are_never_dropped():
    server = HeldServer()
    limits = Limits(output_bytes=1000)
    probe = Calls(server, InvocationRecords(), Metrics(), limits=limits)
    room = probe.room_per_call
    probe.close()
    calls = Calls(server, InvocationRecords(), Metrics(), limits=limits, keep_bytes=2 * room)
    try:
        a, _ = calls.submit(META, b"a" * 1000)
        b, _ = calls.submit(META, b"b" * 1000)
        with pytest.raises(Overloaded) as info:       # both running: their room is held
            calls.submit(META, b"c")
        assert info.value.status == 429 and "2 calls running or not fetched yet" in info.value.message
        server.release.set()
        assert a.done.wait(30) and b.done.wait(30)
        with pytest.raises(Overloaded):               # done, but nobody has read them yet
            calls.submit(META, b"c")
        assert calls.fetch(a.call_id)["output"] == "a" * 1000
        c, _ = calls.submit(META, b"c")               # a was delivered: it makes room
        assert calls.get(a.call_id) is None and calls.get(b.call_id) is b
        assert c.done.wait(30)
        count, size = calls.kept()
        assert count == 2 and size <= calls.keep_bytes
        calls.fetch(c.call_id)
        # Sync calls with a key are delivered as they are answered: they never fill the bound.
        for i in range(10):
            assert calls.invoke(META, b"x" * 900, key="k%d" % i)[0].status == 200
        assert calls.get(b.call_id) is b              # still kept: never fetched
    finally:
        server.release.set()
        calls.close()


def test_a_full_keep_is_a_clear_429_over_http(store):
    server = HeldServer()
    app = make_app(store, server, limits=Limits(output_bytes=1000), keep_answers_bytes=7000)
    assert deploy(app).status == 201
    first = call(app, "POST", "/invoke", b"", query="fn=f&async=1")
    assert first.status == 202
    full = call(app, "POST", "/invoke", b"", query="fn=f&async=1")
    assert full.status == 429 and full.headers["retry-after"] == "1"
    assert full.json["kind"] == "overloaded" and "GET /call/ID" in full.json["error"]
    keyed = call(app, "POST", "/invoke", b"", query="fn=f", headers={"Idempotency-Key": "k"})
    assert keyed.status == 429
    server.release.set()
    app.calls.get(first.json["call_id"]).done.wait(30)
    assert call(app, "GET", "/call/" + first.json["call_id"]).json["status"] == 200
    assert call(app, "POST", "/invoke", b"", query="fn=f&async=1").status == 202
    app.calls.close()


def test_the_keep_setting_must_hold_one_answer():
    with pytest.raises(ValueError):
        Calls(HeldServer(), InvocationRecords(), Metrics(), limits=Limits(output_bytes=1000), keep_bytes=1000)


# -- the real gateway, as a browser and curl reach it -----------------------------------------

def test_real_stack_refuses_cross_site_writes_and_rebinding(start_stack):
    stack = start_stack(workers=1, extra_args=["--public-name", "faas.test"],
                        env={"FAAS_INVOKE_KEY": "inv-s3cret"})
    url = stack.url
    port = stack.port
    # A cross-site form: text/plain, Origin of the attacker's page.
    status, body, headers = http("POST", url + "/deploy?name=planted&lang=python", HELLO_PY,
                                 {"Origin": EVIL, "Content-Type": "text/plain"})
    assert status == 403 and body["kind"] == "forbidden", body
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The same request as curl sends it: no Origin.
    deployed = deploy_real(url, "greet", "python", b"import sys\nprint('hi', sys.stdin.read())\n")
    assert deployed["name"] == "greet"
    assert http("GET", url + "/function/planted")[0] == 404
    # DNS rebinding: the attacker's name now points at us; the page's requests carry it as Host.
    status, body, _ = http("GET", url + "/function/greet", headers={"Host": "evil.example:%d" % port})
    assert status == 421 and body["kind"] == "misdirected"
    assert http("GET", url + "/health", headers={"Host": "faas.test:%d" % port})[0] == 200
    assert http("GET", url + "/health", headers={"Host": "localhost:%d" % port})[0] == 200
    # The invoke key came through the environment: needed, and on no command line.
    assert http("POST", url + "/invoke?fn=greet", b"x")[0] == 401
    status, body, _ = http("POST", url + "/invoke?fn=greet", b"x", {"Authorization": "Bearer inv-s3cret"})
    assert status == 200 and body["output"] == "hi x\n"
    for cmdline in stack_command_lines(stack):
        assert "inv-s3cret" not in cmdline


def stack_command_lines(stack):
    """The command lines of every process in the stack's process group."""
    pgid = os.getpgid(stack.proc.pid)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ProcessLookupError):
            continue
    assert any(" gateway " in line for line in found), found
    return found
