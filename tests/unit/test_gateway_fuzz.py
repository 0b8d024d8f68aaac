"""Random requests at the in-process gateway: every answer is JSON with "ok", never a crash page,
and the only 5xx is 503 for what is missing here (no server, no toolchain)."""

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wsgi_app import call

from reference.config import Limits
from reference.functions.storage import Storage
from reference.gateway.app import make_app
from reference.wire.errors import ToolchainMissing, Unavailable

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
NAMES = ["hello", "page", "x", "", "../etc", "a" * 70, "hello_1", "ünï", "a b", "%00"]
LANGS = ["python", "py", "c", "rust", "go", "js", "node", "php", "html", "HTML", "cobol", "", "c++"]
KEYS = ["name", "lang", "fn", "timeout_ms", "memory_mb", "input", "code"]


class NoServer:
    """What the gateway sees when no server is running."""

    def invoke(self, meta, payload):
        raise Unavailable("server unavailable: nothing listens on the server socket")

    def stats(self):
        raise Unavailable("server unavailable")

    def health(self):
        raise Unavailable("server unavailable")


def no_toolchain(lang, source):
    raise ToolchainMissing("no %s toolchain found on this test machine" % lang, install="see LANGUAGES.md")


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    limits = Limits(code_bytes=2000, payload_bytes=3000, max_timeout_ms=10_000, max_memory_mb=256)
    store = Storage(tmp_path_factory.mktemp("functions"))
    plain = make_app(store, NoServer(), limits, compile_to_wasm=no_toolchain)
    keyed = make_app(store, NoServer(), limits, api_key="k", invoke_key="k", compile_to_wasm=no_toolchain)
    # Known functions, so invoke, /function and /run reach past the 404.
    assert call(plain, "POST", "/deploy", b"print(1)", query="name=hello&lang=py").status == 201
    assert call(plain, "POST", "/deploy", b"<p>hi</p>", query="name=page&lang=html").status == 201
    return {"plain": plain, "keyed": keyed}


values = st.one_of(st.sampled_from(NAMES + LANGS), st.text(max_size=20),
                   st.integers(-5, 100_000).map(str), st.binary(max_size=20))


names = st.sampled_from(NAMES) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)


def _pair(key, value):
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return "%s=%s" % (urllib.parse.quote(key, safe=""), urllib.parse.quote_from_bytes(raw))


@st.composite
def queries(draw):
    """Mostly the parameters the routes read (so requests get past the first check), some junk."""
    parts = []
    for key, value in (("name", names), ("lang", st.sampled_from(LANGS)),
                       ("fn", st.sampled_from(["hello", "page"]) | names),
                       ("timeout_ms", st.integers(0, 20_000).map(str)), ("memory_mb", st.integers(0, 300).map(str)),
                       ("input", values)):
        if draw(st.integers(0, 3)) >= (2 if key in ("timeout_ms", "memory_mb") else 1):
            parts.append(_pair(key, draw(value) if draw(st.integers(0, 4)) else draw(values)))
    for key, value in draw(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=5), values), max_size=2)):
        parts.append(_pair(key, value))
    if draw(st.booleans()):
        parts.append(draw(st.text(alphabet="=&%+;abc", max_size=8)))  # raw junk in the query
    draw(st.randoms()).shuffle(parts)
    return "&".join(parts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["binary", "text", "deploy_json", "input_json", "any_json", "huge"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "deploy_json":
        doc = {k: draw(st.sampled_from(NAMES + LANGS) | json_values)
               for k in draw(st.sets(st.sampled_from(["name", "lang", "code", "timeout_ms", "memory_mb"])))}
        return json.dumps(doc).encode()
    if kind == "input_json":
        return json.dumps({"input": draw(json_values)}).encode()
    if kind == "huge":
        return b"x" * draw(st.sampled_from([1999, 2000, 2001, 3001, 5000]))
    return json.dumps(draw(json_values)).encode()


any_paths = st.one_of(
    st.sampled_from(["/deploy", "/invoke", "/functions", "/stats", "/health", "/", "/languages/x"]),
    st.builds(lambda route, name: route + name, st.sampled_from(["/function/", "/run/"]),
              st.sampled_from(NAMES) | st.text(alphabet=st.characters(max_codepoint=255), max_size=12)),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=20).map(lambda p: "/" + p),
)

# Mostly a route with its own method, so the fuzz reaches the routes' bodies, not only 404/405.
routes = st.one_of(
    st.just(("POST", "/deploy")),
    st.just(("POST", "/invoke")),
    st.tuples(st.just("GET"), st.builds(lambda route, name: route + name,
                                        st.sampled_from(["/function/", "/run/"]), names)),
    st.tuples(st.sampled_from(METHODS), any_paths),
)

headers = st.dictionaries(
    st.sampled_from(["Authorization", "Accept", "X-Anything", "Cookie", "Content-Encoding", "Transfer-Encoding",
                     "Origin", "Sec-Fetch-Site", "Host"]),
    st.sampled_from(["Bearer k", "Bearer wrong", "Basic Zm9v", "", "chunked", "gzip", "*/*",
                     "http://127.0.0.1", "null", "http://evil.example", "cross-site", "same-origin",
                     "localhost:8080", "[::1]", "evil.example:80", "127.0.0.1:"])
    | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    max_size=3,
)
KEY = {"Authorization": "Bearer k"}

content_types = st.sampled_from([None, "application/json", "application/json; charset=utf-8",
                                  "text/plain", "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=x", "garbage/;;;"])


def check_answer(answer, method, path):
    assert 200 <= answer.status < 500 or answer.status == 503, (answer.status, answer.raw[:300])
    if method == "HEAD":
        return  # no body by definition
    browser_page = path.startswith("/run/") or path == "/" or path.startswith("/static/") or path == "/favicon.ico"
    if answer.status == 200 and browser_page and answer.headers["content-type"].startswith(("text/", "image/")):
        return  # the browser routes (dashboard, /run/NAME) answer pages or text on success
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert isinstance(answer.json, dict), answer.raw[:300]
    assert isinstance(answer.json.get("ok"), bool)
    if answer.status >= 400:
        assert answer.json["ok"] is False
        assert isinstance(answer.json.get("error"), str) and answer.json["error"]
    if answer.status == 503:
        assert answer.json["kind"] in ("unavailable", "toolchain_missing")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(which=st.sampled_from(["plain", "plain", "plain", "keyed"]), route=routes, query=queries(), body=bodies(),
       content_type=content_types, extra_headers=headers)
# Falsifying examples found before, replayed on every run (hypothesis's database is not kept in CI).
@example(which="plain", route=("GET", "/\x80"), query="", body=b"", content_type=None, extra_headers={})
@example(which="plain", route=("GET", "/run/hel\x80lo"), query="", body=b"", content_type=None, extra_headers={})
def test_random_requests_get_well_formed_answers(apps, which, route, query, body, content_type,
                                                 extra_headers):
    app = apps[which]
    method, path = route
    answer = call(app, method, path, body, query=query, headers=extra_headers, content_type=content_type)
    check_answer(answer, method, path)
    # Whatever came before, the app still answers (a fuzzed DELETE may have removed hello:
    # then it must be deployable again).
    alive = call(app, "GET", "/function/hello", headers=KEY)
    if alive.status == 404 and method == "DELETE":
        assert call(apps["plain"], "POST", "/deploy", b"print(1)", query="name=hello&lang=py").status == 201
        alive = call(app, "GET", "/function/hello", headers=KEY)
    assert alive.status == 200 and alive.json["name"] == "hello"
