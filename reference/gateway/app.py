"""The HTTP gateway: a bottle app whose thin routes sit over storage, toolchains and the server client.

`make_app` builds the WSGI app (tests drive it in-process); `serve` runs it under gevent (or
waitress, with --http waitress).
Every answer is JSON with "ok"; every failure is a FaasError turned into its status in one place.
"""

import functools
import hmac
import json
import logging

import bottle
from bottle import request, response

from reference import config
from reference.functions import languages
from reference.functions.storage import check_name
from reference.gateway import metrics as metrics_mod
from reference.gateway.calls import Calls
from reference.gateway.metrics import Metrics
from reference.gateway.records import InvocationRecords
from reference.wire.errors import (
    BadRequest,
    Conflict,
    FaasError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

# Fields of a function's metadata that are the server's business, not the user's.
PRIVATE_FIELDS = ("dir",)


# -- the one place where errors become HTTP answers ---------------------------------------

def _answer_errors(callback):
    """Bottle plugin: a FaasError becomes its status and JSON body; anything else a 500
    without a traceback (the traceback goes to the log)."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            answer = callback(*args, **kwargs)
            if isinstance(answer, dict) and "ok" in answer:
                answer = {"ok": answer.pop("ok"), **answer}  # the seed's answers start with "ok"
            return answer
        except bottle.HTTPResponse:
            raise
        except FaasError as exc:
            response.status = exc.status
            if "retry_after" in exc.extra:  # overloaded: tell clients when to come back
                response.set_header("Retry-After", str(exc.extra["retry_after"]))
            return exc.to_dict()  # already "ok" first
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            response.status = 500
            return {"ok": False, "kind": "internal",
                    "error": "internal error in the gateway; its log has the details"}

    return wrapper


_HTTP_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _json_error_page(res):
    """Bottle's own errors (no route, wrong method, unreadable body) as JSON, not HTML."""
    if res.status_code == 404:
        message = "no such endpoint: %s %s" % (request.method, request.path)
    elif res.status_code == 405:
        message = "method %s not allowed on %s (allowed: %s)" % (
            request.method, request.path, res.headers.get("Allow", "?"))
    elif res.status_code >= 500:
        message = "internal error in the gateway; its log has the details"
    else:
        message = str(res.body or res.status_line)
    response.content_type = "application/json"
    body = {"ok": False, "error": message, "kind": _HTTP_KINDS.get(res.status_code, "http_error")}
    return json.dumps(body)


# -- request helpers ------------------------------------------------------------------------

def _read_body(limit, what):
    """The request body, refusing more than `limit` bytes (before reading when the size is known)."""
    if request.content_length > limit:
        raise PayloadTooLarge("%s too large: %d bytes, the limit is %d bytes"
                              % (what, request.content_length, limit), limit=limit)
    body = request.body.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge("%s too large: the limit is %d bytes" % (what, limit), limit=limit)
    return body


def _query(name):
    value = request.query.getunicode(name)
    if value is None and name in request.query:
        raise BadRequest("query parameter %r is not valid UTF-8" % name)
    return value


def _limit(value, name, ceiling):
    """A per-function limit from the query (a string) or JSON (a number): an int in 1..ceiling."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass  # refused just below, with the value in the message
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
        raise BadRequest("%s must be a whole number from 1 to %d, got %r" % (name, ceiling, value))
    return value


def decode_input(body):
    """The function's stdin from an invoke body, per the contract: a JSON object with "input"
    gives that string's UTF-8 bytes or any other value's JSON text; any other body goes as is."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(doc, dict) or "input" not in doc:
        return body
    value = doc["input"]
    if not isinstance(value, str):
        value = json.dumps(value)  # Python's default form, e.g. '{"a": 1}'; ASCII-only
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("input holds a lone UTF-16 surrogate (\\ud800-\\udfff): not valid text") from None


def _public(meta):
    return {k: v for k, v in meta.items() if k not in PRIVATE_FIELDS}


# -- make_app -------------------------------------------------------------------------------

def make_app(storage, client, limits=config.LIMITS, api_key=None, protect_invoke=False,
             compile_to_wasm=None, precompile=None):
    """The gateway's WSGI app.

    storage: a Storage; client: anything with invoke(meta, payload) -> Outcome, stats(), health()
    (a ServerClient). api_key: when set, deploy needs `Authorization: Bearer KEY`, and invoke
    too if protect_invoke. compile_to_wasm / precompile default to reference.functions.toolchains and
    reference.worker.wasm.engine, imported on first use so the gateway starts without them.
    """
    app = bottle.Bottle()
    records = InvocationRecords()
    metrics = Metrics(client)
    calls = app.calls = Calls(client, records, metrics)
    app.install(_answer_errors)
    app.default_error_handler = _json_error_page

    def authorize():
        if not api_key:
            return
        given = request.get_header("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            response.set_header("WWW-Authenticate", "Bearer")
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer KEY'")

    def lookup(name_or_id):
        meta = storage.get(name_or_id) if name_or_id else None
        if meta is None:
            raise NotFound("function not found", fn=name_or_id)
        return meta

    def compile_source(lang, source):
        """code.wasm and code.cwasm for a compiled language, and what to add to the metadata."""
        compiler, precompiler = compile_to_wasm, precompile
        if compiler is None:
            from reference.functions import toolchains
            compiler = toolchains.compile_to_wasm
        if precompiler is None:
            from reference.worker.wasm import engine as wasm
            precompiler = wasm.precompile
        compiled = compiler(lang.name, source)
        files = {"code.wasm": compiled.wasm, "code.cwasm": precompiler(compiled.wasm)}
        extra = {"compile_ms": round(compiled.compile_ms, 1), "toolchain": compiled.toolchain,
                 "wasm_size": len(compiled.wasm)}
        return files, extra

    def answer(call, replayed=False):
        """A finished Call as the HTTP answer: its status, its body, timing headers."""
        response.status = call.status
        body = call.body
        if "worker" in body:
            response.set_header("X-Worker", str(body["worker"]))
            response.set_header("X-Queue-Ms", "%.3f" % body["queue_ms"])
            response.set_header("X-Exec-Ms", "%.3f" % body["exec_ms"])
        if "retry_after" in body:  # overloaded: tell clients when to come back
            response.set_header("Retry-After", str(body["retry_after"]))
        if call.kept:
            body = dict(body, call_id=call.call_id)
        if replayed:
            response.set_header("Idempotent-Replayed", "true")
        return body

    def store(name, lang, code, limits_form, op, current=None):
        """Check and compile `code`, then deploy it (op "deploy") or make it the new version of
        `current` (op "update"). Counts the result in the metrics either way."""
        if not code:
            raise BadRequest("the function's code is empty")
        if len(code) > limits.code_bytes:
            raise PayloadTooLarge("code too large: %d bytes, the limit is %d bytes"
                                  % (len(code), limits.code_bytes), limit=limits.code_bytes)
        base = current or {}
        meta = {
            "timeout_ms": _limit(limits_form["timeout_ms"], "timeout_ms", limits.max_timeout_ms)
            or base.get("timeout_ms") or limits.timeout_ms,
            "memory_mb": _limit(limits_form["memory_mb"], "memory_mb", limits.max_memory_mb)
            or base.get("memory_mb") or limits.memory_mb,
        }
        if op == "deploy" and storage.exists(name):
            # Answered before compiling: a conflict should not cost a compilation.
            raise _conflict(name)
        try:
            files = {"code.%s" % lang.ext: code}
            if lang.compiled:
                wasm_files, extra = compile_source(lang, code)
                files.update(wasm_files)
                meta.update(extra)
            if op == "deploy":
                stored = storage.deploy(name, lang.name, files, meta)
            else:
                stored = storage.replace(name, lang.name, files, meta)
        except FaasError as exc:
            metrics.deployed(lang.name, op, exc.kind)
            raise
        metrics.deployed(lang.name, op, "ok", meta.get("compile_ms"))
        return stored

    @app.post("/deploy")
    def deploy():
        """Source as the body with ?name=N&lang=L, or a JSON object {name, lang, code, ...}."""
        authorize()
        if "name" in request.query:
            form = {key: _query(key) for key in ("name", "lang", "timeout_ms", "memory_mb")}
            code = _read_body(limits.code_bytes, "code")
        else:
            # JSON escapes make the body longer than the code; the code's own size is checked below.
            form = _json_deploy_form(_read_body(limits.payload_bytes, "deploy body"))
            code = form["code"]
        name = check_name(form["name"])
        if not form["lang"]:
            raise BadRequest("say the function's language: lang=c, rust, go, js, python, php or html")
        stored = store(name, languages.resolve(form["lang"]), code, form, "deploy")
        response.status = 201
        return dict(_public(stored), ok=True)

    @app.post("/invoke")
    def invoke():
        """Run a function (?fn=ID, or its name) on the body; its output, or why it failed."""
        if protect_invoke:
            authorize()
        fn = _query("fn")
        if not fn:
            raise BadRequest("say which function to run: POST /invoke?fn=ID")
        meta = lookup(fn)
        payload = decode_input(_read_body(limits.payload_bytes, "payload"))
        key = request.get_header("Idempotency-Key") or None
        if key is not None and len(key) > 255:
            raise BadRequest("Idempotency-Key is too long: at most 255 characters")
        if _query("async") in ("1", "true", "yes"):
            call, replayed = calls.submit(meta, payload, key)
            response.status = 202
            if replayed:
                response.set_header("Idempotent-Replayed", "true")
            return {"ok": True, "call_id": call.call_id, "state": call.state,
                    "status_url": "/call/%s" % call.call_id}
        return answer(*calls.invoke(meta, payload, key))

    @app.get("/call/<call_id>")
    def call_state(call_id):
        """An async (or keyed) call: its state and, once done, its answer with its status."""
        call = calls.get(call_id)
        if call is None:
            raise NotFound("call not found: calls are kept for %d s, the last %d"
                           % (calls.keep_for_s, calls.keep), call_id=call_id)
        return call.view()

    @app.get("/function/<name>")
    def function(name):
        """The function (its current version, or the version an id names), with its code and
        the list of kept versions."""
        meta = lookup(name)
        code = storage.code(meta).decode("utf-8", errors="replace")
        versions = [{"id": v["id"], "version": v.get("version", 1), "created": v["created"]}
                    for v in storage.versions(meta["name"])]
        return dict(_public(meta), ok=True, code=code, version=meta.get("version", 1),
                    current=bool(versions) and versions[0]["id"] == meta["id"], versions=versions)

    @app.put("/function/<name>")
    def update(name):
        """A new version: the source as the body (?lang= optional, default the current one),
        or JSON {"code", "lang", "timeout_ms", "memory_mb"}; limits default to the current ones."""
        authorize()
        current = storage.get(check_name(name))
        if current is None or current["name"] != name:
            raise NotFound("function not found", fn=name)
        if request.content_type.split(";")[0].strip() == "application/json":
            form = _json_code_form(_read_body(limits.payload_bytes, "update body"), need_name=False)
        else:
            form = {key: _query(key) for key in ("lang", "timeout_ms", "memory_mb")}
            form["code"] = _read_body(limits.code_bytes, "code")
        lang = languages.resolve(form.get("lang") or current["lang"])
        stored = store(name, lang, form["code"], form, "update", current)
        return dict(_public(stored), ok=True)

    @app.delete("/function/<name>")
    def delete(name):
        """Remove the function and every version's files; its name is free again."""
        authorize()
        removed = storage.delete(check_name(name))
        records.forget(name)
        return {"ok": True, "name": name, "deleted": removed}

    @app.get("/function/<name>/invocations")
    def invocations(name):
        meta = lookup(name)
        found = records.recent(meta["name"])
        return {"ok": True, "name": meta["name"], "kept": records.kept, "count": len(found),
                "invocations": found}

    @app.get("/metrics")
    def metrics_page():
        response.content_type = metrics_mod.CONTENT_TYPE
        return metrics.exposition()

    @app.get("/functions")
    def functions():
        found = [_public(meta) for meta in storage.list()]
        return {"ok": True, "count": len(found), "functions": found}

    @app.get("/stats")
    def stats():
        answer = {k: v for k, v in client.stats().items() if k != "req"}
        if answer.get("balancer") is False:
            raise Unavailable("balancer unavailable: the server cannot reach it", **answer)
        return dict(answer, ok=True)

    @app.get("/health")
    def health():
        """200 when the gateway, server, balancer and workers all answer; 503 naming what does not."""
        try:
            answer = {k: v for k, v in client.health().items() if k != "req"}
        except FaasError as exc:
            raise Unavailable("down: server (%s)" % exc, gateway=True, server=False,
                              down=["server"]) from None
        down = [part for part in ("server", "balancer", "workers") if not answer.get(part)]
        if down:
            raise Unavailable("down: %s" % ", ".join(down), gateway=True, down=down, **answer)
        return dict(answer, ok=True, gateway=True)

    @app.get("/languages")
    def languages_report():
        from reference.functions import toolchains
        return {"ok": True, "languages": toolchains.report()}

    @app.get("/run/<name>")
    def run_in_browser(name):
        """For a browser: an HTML function's page as text/html; any other function is invoked
        with ?input=TEXT (as its raw stdin) and its output answered as text/plain. Failures
        stay JSON, like everywhere else."""
        meta = lookup(name)
        if meta["lang"] == "html":
            response.content_type = "text/html; charset=utf-8"
            return storage.code(meta)
        payload = (_query("input") or "").encode("utf-8")
        if len(payload) > limits.payload_bytes:
            raise PayloadTooLarge("input too large: the limit is %d bytes" % limits.payload_bytes)
        call, _ = calls.invoke(meta, payload)
        if call.status != 200:
            return answer(call)
        response.content_type = "text/plain; charset=utf-8"
        return call.body["output"]

    from reference.gateway import dashboard
    dashboard.install(app)
    return app


def _conflict(name):
    return Conflict("function name '%s' already exists, please choose another name" % name)


def _json_deploy_form(body):
    """name, lang, code (bytes), timeout_ms, memory_mb from a JSON deploy body; BadRequest if malformed."""
    return _json_code_form(body, need_name=True)


def _json_code_form(body, need_name):
    """The fields of a JSON deploy (need_name) or update body (name ignored, lang optional)."""
    if need_name:
        usage = ("send the source as the body of POST /deploy?name=N&lang=L, "
                 "or a JSON object {\"name\", \"lang\", \"code\"}")
    else:
        usage = ("send the source as the body of PUT /function/NAME[?lang=L], "
                 "or a JSON object {\"code\", \"lang\"}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("deploy body is not valid JSON: %s" % usage) from None
    if not isinstance(doc, dict):
        raise BadRequest("deploy body is not a JSON object: %s" % usage)
    for key in ("name", "lang", "code") if need_name else ("code",):
        if not isinstance(doc.get(key), str):
            raise BadRequest("%s needs %r as a JSON string: %s"
                             % ("deploy" if need_name else "update", key, usage))
    if not need_name and not isinstance(doc.get("lang", ""), str):
        raise BadRequest("'lang' must be a JSON string: %s" % usage)
    try:
        code = doc["code"].encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("code holds a lone UTF-16 surrogate: not valid text") from None
    return {"name": doc.get("name"), "lang": doc.get("lang"), "code": code,
            "timeout_ms": doc.get("timeout_ms"), "memory_mb": doc.get("memory_mb")}
