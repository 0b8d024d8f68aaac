"""The HTTP gateway: a bottle app with one route table over the handlers of each concern
(deploy.py, catalog.py, invoke.py, status.py, dashboard.py), and the plumbing they share.

`make_app` builds the WSGI app (tests drive it in-process); reference/gateway/serve.py runs it.
Every answer is JSON with "ok"; every failure is a FaasError, turned into its status, headers
and body in one place (`error_answer`). Who may call what is the table's last column, checked
before the handler runs (reference/gateway/checks.py); every request's Host is checked first.
"""

import functools
import json
import logging
import os
import sqlite3

import bottle
from bottle import request, response

from reference import config
from reference.gateway import calls as calls_mod
from reference.gateway import checks, dashboard
from reference.gateway import store as store_mod
from reference.gateway.admission import Admission
from reference.gateway.callbacks import Callbacks
from reference.gateway.calls import Calls
from reference.gateway.catalog import CatalogRoutes
from reference.gateway.deploy import Deployer, DeployRoutes
from reference.gateway.fast import FastInvoke
from reference.gateway.invoke import InvokeRoutes
from reference.gateway.metrics import Metrics
from reference.gateway.records import InvocationRecords
from reference.gateway.status import StatusRoutes
from reference.wire.errors import FaasError

log = logging.getLogger(__name__)

# Who may call a route (the route table's last column):
OPEN = "open"        # anyone who reaches the gateway by one of its names
CODE = "code"        # reads a function's code: the API key, when the gateway has one
CHANGE = "change"    # changes what is deployed: a same-origin page or no browser, and the API key
INVOKE = "invoke"    # runs a function: the invoke key (or the API key), when the gateway has one

# Headers of every answer, and of everything under /run/: a function's page runs in an opaque
# origin, so its scripts cannot call the API with the dashboard's (same-origin) standing.
EVERY_ANSWER = [("X-Content-Type-Options", "nosniff")]
RUN_PAGE_CSP = "sandbox allow-scripts"
RUN_PREFIX = "/run/"
_RUN_EXTRA = EVERY_ANSWER + [("Content-Security-Policy", RUN_PAGE_CSP)]
_EVERY_OURS = frozenset(name.lower() for name, _ in EVERY_ANSWER)
_RUN_OURS = frozenset(name.lower() for name, _ in _RUN_EXTRA)


def make_app(storage, client, limits=config.LIMITS, api_key=None, invoke_key=None, host=config.DEFAULT_HOST,
             public_names=(), keep_answers_bytes=calls_mod.KEEP_BYTES, compile_to_wasm=None, precompile=None,
             check_syntax=None, durable=True):
    """The gateway's WSGI app.

    storage: a Storage; client: anything with invoke(meta, payload) -> Outcome, stats(), health()
    (a ServerClient). api_key: when set, deploying, updating, deleting and reading code need
    `Authorization: Bearer KEY`; invoke_key: when set, invoking needs it (or the API key).
    host and public_names: the names the gateway answers to (checks.HostNames).
    keep_answers_bytes: the bound on answers kept for async and keyed calls (calls.Calls).
    compile_to_wasm / precompile / check_syntax: the compile and syntax-check seams
    (deploy.Deployer), for tests. durable: records, logs and async calls in the SQLite store
    under the functions directory (reference/gateway/store.py), else in memory only.
    """
    app = GatewayApp()
    store = open_store(storage) if durable else None
    records = InvocationRecords(store)
    metrics = Metrics(client)
    admission = Admission(client, storage)   # per-function max_concurrency, and each call's env
    calls = app.calls = Calls(admission, records, metrics, keep_bytes=keep_answers_bytes, limits=limits,
                              store=store, callbacks=Callbacks())
    calls.recover(storage.get)   # what a gateway that died left: run it, or say it failed
    deploys = DeployRoutes(Deployer(storage, limits, metrics, records, compile_to_wasm, precompile,
                                    check_syntax))
    catalog = CatalogRoutes(storage, records)
    invokes = InvokeRoutes(storage, calls, limits, admission)
    status = StatusRoutes(client, metrics)

    routes = [
        # method  path                            handler               who may call it
        ("POST",   "/deploy",                      deploys.deploy,       CHANGE),
        ("PUT",    "/function/<name>",             deploys.update,       CHANGE),
        ("DELETE", "/function/<name>",             deploys.delete,       CHANGE),
        ("POST",   "/function/<name>/rollback",    deploys.rollback,     CHANGE),
        ("GET",    "/function/<name>",             catalog.function,     CODE),
        ("GET",    "/functions",                   catalog.functions,    CODE),
        ("GET",    "/function/<name>/invocations", catalog.invocations,  CODE),
        ("GET",    "/function/<name>/logs",        catalog.logs,         CODE),
        ("GET",    "/function/<name>/concurrency", invokes.concurrency,  CODE),
        ("POST",   "/invoke",                      invokes.invoke,       INVOKE),
        ("GET",    "/call/<call_id>",              invokes.call_state,   INVOKE),
        ("GET",    "/run/<name>",                  invokes.run,          INVOKE),
        ("GET",    "/stats",                       status.stats,         OPEN),
        ("GET",    "/health",                      status.health,        OPEN),
        ("GET",    "/languages",                   status.languages,     OPEN),
        ("GET",    "/metrics",                     status.metrics_page,  OPEN),
        ("GET",    "/",                            dashboard.index,      OPEN),
        ("GET",    "/static/<path:path>",          dashboard.static,     OPEN),
        ("GET",    "/favicon.ico",                 dashboard.favicon,    OPEN),
    ]
    guard = Guard(api_key, invoke_key)
    for method, path, handler, access in routes:
        app.route(path, method, guard.wrap(handler, access))
    app.install(_answer_errors)
    app.default_error_handler = _json_error_page
    names = checks.HostNames(host, public_names)
    app.add_hook("before_request", functools.partial(_check_request, names))
    # POST /invoke without bottle, for the gateway's own HTTP server (reference/gateway/fast.py).
    app.fast = FastInvoke(names, guard, storage, calls, limits, EVERY_ANSWER, error_answer)
    return app


def open_store(storage):
    """The SQLite store under the functions directory, or None (records and async calls then
    in memory only, and said loudly) when it cannot be opened: the gateway still serves."""
    path = os.path.join(storage.root, store_mod.FILE_NAME)
    try:
        return store_mod.Store(path)
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open the gateway's store %s (%s): invocation records, logs and async calls "
                  "are kept in memory only, and lost when the gateway stops", path, exc)
        return None


def app_options(settings):
    """make_app's keyword arguments from a GatewaySettings (reference/config.py)."""
    return {"limits": settings.limits, "api_key": settings.api_key, "invoke_key": settings.invoke_key,
            "host": settings.host, "public_names": settings.public_names,
            "keep_answers_bytes": settings.keep_answers_mb * config.MIB}


class GatewayApp(bottle.Bottle):
    """Bottle, adding the headers every answer carries where the app hands its status line to
    the server, so that no answer (an error page, a static file, a crash) goes without them."""

    def wsgi(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(RUN_PREFIX):
            extra, ours = _RUN_EXTRA, _RUN_OURS
        else:
            extra, ours = EVERY_ANSWER, _EVERY_OURS

        def start(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() not in ours] + extra
            return start_response(status, headers, exc_info)

        return super().wsgi(environ, start)


class Guard:
    """Checks who is calling before a route's handler runs, by the route's access level."""

    def __init__(self, api_key=None, invoke_key=None):
        self.api_key, self.invoke_key = api_key or None, invoke_key or None

    def wrap(self, handler, access):
        if access not in (OPEN, CODE, CHANGE, INVOKE):
            raise ValueError("unknown access level %r" % (access,))
        if access == OPEN:
            return handler

        @functools.wraps(handler)
        def guarded(*args, **kwargs):
            self.check(access)
            return handler(*args, **kwargs)

        return guarded

    def check(self, access):
        authorization = request.get_header("Authorization")
        if access == CHANGE:
            checks.check_same_origin(request.get_header("Origin"), request.get_header("Sec-Fetch-Site"),
                                     request.environ.get("HTTP_HOST"))
        if access in (CHANGE, CODE):
            checks.check_key(authorization, [self.api_key], "API key")
        elif access == INVOKE:
            self.check_invoke(authorization)

    def check_invoke(self, authorization):
        """Unauthorized (401) unless the Authorization header carries the invoke key or the
        API key, when the gateway has an invoke key."""
        if self.invoke_key:
            checks.check_key(authorization, [self.invoke_key, self.api_key], "invoke key")


# -- the one place where errors become HTTP answers ---------------------------------------

def error_answer(exc):
    """A FaasError as its HTTP answer: (status, headers, JSON body)."""
    headers = {}
    if "retry_after" in exc.extra:  # overloaded: tell clients when to come back
        headers["Retry-After"] = str(exc.extra["retry_after"])
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return exc.status, headers, exc.to_dict()  # to_dict puts "ok" first


def _check_request(names):
    """Before any route: its Host, then its path (one hook: bottle's hooks cost per call)."""
    _check_host(names)
    _check_path()


def _check_host(names):
    """Before any route: a Host that is not one of the gateway's names gets 421."""
    try:
        names.check(request.environ.get("HTTP_HOST"))
    except FaasError as exc:
        status, headers, body = error_answer(exc)
        raise bottle.HTTPResponse(json.dumps(body), status, headers, Content_Type="application/json")


def _check_path():
    """Before any route: a path that is not UTF-8 names no endpoint. Bottle drops the bytes it
    cannot decode and routes what is left (`GET /\x80` would get the dashboard, `/run/a\x80b`
    would run `ab`); the path it was given is in bottle.raw_path."""
    raw = request.environ.get("bottle.raw_path", "")
    try:
        raw.encode("latin1").decode("utf-8")
    except UnicodeError:
        shown = raw.encode("latin1", "replace").decode("utf-8", "replace")
        body = {"ok": False, "kind": "not_found",
                "error": "no such endpoint: %s %s (the path is not valid UTF-8)" % (request.method, shown)}
        raise bottle.HTTPResponse(json.dumps(body), 404, Content_Type="application/json") from None


def _answer_errors(callback):
    """Bottle plugin: a FaasError becomes its status and JSON body; anything else a 500
    without a traceback (the traceback goes to the log)."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            answer = callback(*args, **kwargs)
        except bottle.HTTPResponse:
            raise
        except FaasError as exc:
            response.status, headers, body = error_answer(exc)
            for name, value in headers.items():
                response.set_header(name, value)
            return body
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            response.status = 500
            return calls_mod.internal_error()
        if isinstance(answer, dict) and "ok" in answer:
            answer = {"ok": answer.pop("ok"), **answer}  # the seed's answers start with "ok"
        return answer

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
