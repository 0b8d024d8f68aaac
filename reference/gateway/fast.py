"""POST /invoke answered without bottle: the one route that carries a FaaS's load.

The gateway's HTTP server (reference/gateway/http/server.py) offers every complete request to
`FastInvoke` before it builds a WSGI environ. A plain synchronous invocation,

    POST /invoke?fn=NAME_OR_ID        (no Idempotency-Key, no X-Callback-Url, no ?async)

with a Host the gateway answers to, the invoke key when the gateway has one, and a body within
the payload limit, is run here through the same `Calls` as the bottle route (records, metrics,
admission and all) and answered with the same bytes: the same status line, headers in the same
order, the same JSON. Everything else, and every request this path would refuse, is declined
(None) and goes to the bottle app, which stays the one place where requests are refused: a
request is declined before anything of it has run, so declining never runs a call twice.

Why: the bottle app around the route (its hooks, router, plugins, request and response objects)
and the WSGI environ cost about a third of the gateway's CPU per invocation (docs/PERFORMANCE.md,
issue 20). FAAS_GATEWAY_FAST=0 turns this path off (every request through bottle), and
tests/integration/test_gateway_fast.py checks that the two paths answer alike.
"""

import json
import logging
import re

import bottle

from reference.gateway import parse
from reference.gateway.calls import internal_error
from reference.gateway.catalog import lookup
from reference.gateway.invoke import call_headers
from reference.wire.errors import FaasError

log = logging.getLogger(__name__)

PATH = b"/invoke"
# A query this path takes: fn= and a name or id as it is (no escapes, no '+', nothing else);
# any other query string is bottle's to parse.
_QUERY_RE = re.compile(rb"fn=([A-Za-z0-9][A-Za-z0-9_-]{0,80})")
QUERIES_MAX = 256            # query strings remembered (fn's value, or not ours)
# Request headers that ask for what only the bottle route does: declined.
_DECLINE = frozenset((b"idempotency-key", b"x-callback-url"))
_STATUS_LINES = bottle._HTTP_STATUS_LINES   # bottle's own, so that the status lines are its


def _answer_encoder():
    """json.dumps(body) as bottle's JSON plugin calls it (its separators, ASCII, NaN allowed),
    through the json module's own C encoder made once, not once a call as json.dumps does:
    the same text (our answers hold no cycles to check for). json.dumps without the C part."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    defaults = json.JSONEncoder()
    encode = make(None, defaults.default, json.encoder.encode_basestring_ascii, None,
                  defaults.key_separator, defaults.item_separator, False, False, True)
    return lambda body: "".join(encode(body, 0))


_dumps = _answer_encoder()


class FastInvoke:
    """`fast(method, path, query, headers, body)`: (status line, [(name, value)], body bytes) for
    a plain POST /invoke, or None when the bottle app must answer it. `path` and `query` are the
    URL's raw bytes, `headers` the request's [(name, value)] bytes as they came."""

    def __init__(self, names, guard, storage, calls, limits, every_answer, error_answer):
        self.names, self.guard, self.storage, self.calls = names, guard, storage, calls
        self.payload_bytes = limits.payload_bytes
        self.every_answer = list(every_answer)
        self.error_answer = error_answer    # the app's: a FaasError as (status, headers, body)
        self._queries = {}

    def __call__(self, method, path, query, headers, body):
        if method != "POST" or path != PATH:
            return None
        fn = self._fn(query)
        if fn is None:
            return None
        host = authorization = None
        hosts = authorizations = 0
        for name, value in headers:
            low = name.lower()
            if low == b"host":
                host, hosts = value, hosts + 1
            elif low == b"authorization":
                authorization, authorizations = value, authorizations + 1
            elif low in _DECLINE:
                return None
        if hosts > 1 or authorizations > 1 or len(body) > self.payload_bytes:
            return None
        if host is not None and not self.names.allows(host.decode("latin-1")):
            return None
        try:
            self.guard.check_invoke(None if authorization is None else authorization.decode("latin-1"))
            meta = lookup(self.storage, fn)
            payload = parse.decode_input(body)
        except FaasError:
            return None
        # From here the call runs: this path answers it, whatever happens.
        try:
            call, _ = self.calls.invoke(meta, payload)
            return self._json(call.status, call_headers(call), call.body)
        except FaasError as exc:
            status, extra, error = self.error_answer(exc)
            return self._json(status, list(extra.items()), error)
        except Exception:
            log.exception("internal error on POST /invoke")
            return self._json(500, [], internal_error())

    def _fn(self, query):
        """fn's value of a query string this path takes, else None (remembered per query)."""
        fn = self._queries.get(query, self)
        if fn is self:
            match = _QUERY_RE.fullmatch(query or b"")
            fn = match.group(1).decode("ascii") if match else None
            if len(self._queries) < QUERIES_MAX:
                self._queries[query] = fn
        return fn

    def _json(self, status, headers, body):
        """The answer as bottle's JSON plugin and the app give it: "ok" first, bottle's JSON."""
        if "ok" in body and next(iter(body)) != "ok":
            body = {"ok": body["ok"], **body}
        data = _dumps(body).encode("utf-8")
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        headers += self.every_answer
        return _STATUS_LINES.get(status) or "%d Unknown" % status, headers, data
