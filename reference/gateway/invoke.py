"""Invoking: POST /invoke (sync, async, with an Idempotency-Key), GET /call/ID and GET /run/NAME,
and GET /function/NAME/concurrency. The core is `Calls` (reference/gateway/calls.py), whose
calls pass the function's admission (reference/gateway/admission.py: max_concurrency) on their
way to the server; these routes read the request, call it and turn the finished call into the
HTTP answer (a call refused by the admission: 429 with Retry-After)."""

from bottle import request, response

from reference.gateway import parse
from reference.gateway.catalog import lookup
from reference.wire.errors import BadRequest, NotFound, PayloadTooLarge

MAX_KEY_CHARS = 255
ASYNC_VALUES = ("1", "true", "yes")


def call_headers(call):
    """A finished call's answer headers: its call id (X-Call-Id: the call_id of its entry in
    GET /function/NAME/logs), the worker's timings, and Retry-After when it was overloaded.
    (The fast path, reference/gateway/fast.py, sends the same.)"""
    headers = [("X-Call-Id", call.call_id)]
    body = call.body
    if "worker" in body:
        headers += [("X-Worker", str(body["worker"])), ("X-Queue-Ms", "%.3f" % body["queue_ms"]),
                    ("X-Exec-Ms", "%.3f" % body["exec_ms"])]
    if "retry_after" in body:  # overloaded: tell clients when to come back
        headers.append(("Retry-After", str(body["retry_after"])))
    return headers


def answer(call, replayed=False):
    """A finished call as the HTTP answer: its status, its body and `call_headers`."""
    response.status = call.status
    for name, value in call_headers(call):
        response.set_header(name, value)
    body = call.body
    if call.kept or call.key is not None:   # a keyed call read back from the store is not kept
        body = dict(body, call_id=call.call_id)
    if replayed:
        response.set_header("Idempotent-Replayed", "true")
    return body


class InvokeRoutes:
    def __init__(self, storage, calls, limits, admission=None):
        self.storage, self.calls, self.limits, self.admission = storage, calls, limits, admission

    def concurrency(self, name):
        """A function's admission (reference/gateway/admission.py): its max_concurrency and
        max_queue, and its calls in flight and waiting now, those refused since the start."""
        meta = lookup(self.storage, name)
        view = self.admission.view(meta["name"], meta) if self.admission is not None else {}
        return dict(view, ok=True, name=meta["name"])

    def invoke(self):
        """Run a function (?fn=ID, or its name) on the body; its output, or why it failed.
        With ?async=1, 202 and a call id at once (and X-Callback-Url: the result POSTed there,
        reference/gateway/callbacks.py)."""
        fn = parse.query("fn")
        if not fn:
            raise BadRequest("say which function to run: POST /invoke?fn=ID")
        meta = lookup(self.storage, fn)
        payload = parse.decode_input(parse.body(self.limits.payload_bytes, "payload"))
        key = idempotency_key()
        callback = request.get_header("X-Callback-Url") or None
        if parse.query("async") in ASYNC_VALUES:
            if callback is not None and self.calls.callbacks is not None:
                callback = self.calls.callbacks.check_url(callback)
            call, replayed = self.calls.submit(meta, payload, key, callback)
            response.status = 202
            if replayed:
                response.set_header("Idempotent-Replayed", "true")
            return {"ok": True, "call_id": call.call_id, "state": call.state,
                    "status_url": "/call/%s" % call.call_id}
        if callback is not None:
            raise BadRequest("X-Callback-Url is for async calls: add ?async=1")
        return answer(*self.calls.invoke(meta, payload, key))

    def call_state(self, call_id):
        """An async (or keyed) call: its state and, once done, its answer with its status."""
        view = self.calls.fetch(call_id)
        if view is None:
            raise NotFound("call not found: calls are kept for %d s, the last %d (async calls: "
                           "for a day in the gateway's store)" % (self.calls.keep_for_s, self.calls.keep),
                           call_id=call_id)
        return view

    def run(self, name):
        """For a browser: an HTML function's page as text/html; any other function is invoked
        with ?input=TEXT (as its raw stdin) and its output answered as text/plain. Failures
        stay JSON, like everywhere else. (The app sandboxes every /run answer with its CSP.)"""
        meta = lookup(self.storage, name)
        if meta["lang"] == "html":
            response.content_type = "text/html; charset=utf-8"
            return self.storage.code(meta)
        payload = (parse.query("input") or "").encode("utf-8")
        if len(payload) > self.limits.payload_bytes:
            raise PayloadTooLarge("input too large: the limit is %d bytes" % self.limits.payload_bytes)
        call, _ = self.calls.invoke(meta, payload)
        if call.status != 200:
            return answer(call)
        response.content_type = "text/plain; charset=utf-8"
        return call.body["output"]


def idempotency_key():
    """The request's Idempotency-Key header, or None."""
    key = request.get_header("Idempotency-Key") or None
    if key is not None and len(key) > MAX_KEY_CHARS:
        raise BadRequest("Idempotency-Key is too long: at most %d characters" % MAX_KEY_CHARS)
    return key
