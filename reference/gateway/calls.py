"""Running invocations for the gateway: sync and async calls, and idempotency keys.

Every invocation goes through `Calls`: it asks the server, turns the Outcome into the answer
(status and JSON body), and writes the invocation record and the metrics. An async call runs
on a bounded thread pool and is kept (last `keep`, at most `ttl_s`) for `GET /call/ID`.
An Idempotency-Key ties a call to one function and input: a retry gets the first call's answer,
waiting for it if it is still running; the same key with another function or input is a 409.
Answers that mean the call never ran (429 overloaded, 503 unavailable) are not kept for the
key, so a retry runs it.
"""

import collections
import concurrent.futures
import hashlib
import logging
import threading
import time
import uuid

from reference.wire.errors import (
    Conflict,
    FaasError,
    FunctionFailed,
    MemoryLimit,
    Overloaded,
    Timeout,
)

log = logging.getLogger(__name__)

ASYNC_THREADS = 8        # async calls running at once (each mostly waits on the server)
ASYNC_PENDING = 256      # async calls queued or running; past this, 429
KEEP_CALLS = 1000        # finished calls (async or keyed) kept for GET /call/ID and retries ...
KEEP_FOR_S = 3600.0      # ... and for at most this long
NOT_RUN = (429, 503)     # answers a retry should not get back: the function never ran
RETRY_AFTER_S = 1


def outcome_fields(outcome, duration_ms):
    """The fields of an invocation answer, from the server's Outcome."""
    return {
        "output": outcome.stdout.decode("utf-8", errors="replace"),
        "stderr": outcome.stderr.decode("utf-8", errors="replace"),
        "exit_code": outcome.exit_code,
        "duration_ms": duration_ms,
        "worker": outcome.worker,
        "truncated": outcome.truncated,
        "cold": outcome.cold,
        "queue_ms": outcome.queue_ms,
        "init_ms": outcome.init_ms,
        "exec_ms": outcome.exec_ms,
    }


def check_outcome(meta, outcome, fields):
    """Raise the FaasError a function's failure maps to (timeout, memory, runtime, non-zero exit)."""
    if outcome.error == "timeout":
        raise Timeout("function timed out after %d ms (its timeout_ms limit)"
                      % meta["timeout_ms"], timeout_ms=meta["timeout_ms"], **fields)
    if outcome.error == "memory":
        raise MemoryLimit("function went over its memory limit of %d MiB (memory_mb)"
                          % meta["memory_mb"], memory_mb=meta["memory_mb"], **fields)
    if outcome.error:
        raise FunctionFailed("function could not run: %s" % (outcome.message or outcome.error),
                             reason=outcome.error, **fields)
    if outcome.exit_code != 0:
        raise FunctionFailed("function exited with code %d" % outcome.exit_code, **fields)


class Call:
    """One invocation the gateway keeps: its state, and once done its status and answer body."""

    def __init__(self, meta, key=None, fingerprint=None):
        self.call_id = uuid.uuid4().hex
        self.name, self.fn_id = meta["name"], meta["id"]
        self.key, self.fingerprint = key, fingerprint
        self.state = "queued"
        self.submitted = time.time()
        self.finished = None
        self.status, self.body = None, None
        self.done = threading.Event()
        self.kept = False  # registered for GET /call/ID (async or keyed)

    def view(self):
        """What GET /call/ID answers: the state and, once done, the sync answer's fields with
        their HTTP-like `status` ("ok" stays the lookup's: true)."""
        answer = {"call_id": self.call_id, "state": self.state, "fn": self.name, "id": self.fn_id,
                  "submitted": round(self.submitted, 3)}
        if self.state == "done":
            answer.update({k: v for k, v in self.body.items() if k != "ok"})
            answer.update(status=self.status, finished=round(self.finished, 3))
        answer["ok"] = True
        return answer


class Calls:
    """Runs invocations through `client` (a ServerClient), recording each in `records`
    (InvocationRecords) and `metrics` (Metrics). Thread-safe."""

    def __init__(self, client, records, metrics, threads=ASYNC_THREADS, max_pending=ASYNC_PENDING,
                 keep=KEEP_CALLS, keep_for_s=KEEP_FOR_S):
        self.client, self.records, self.metrics = client, records, metrics
        self.max_pending, self.keep, self.keep_for_s = max_pending, keep, keep_for_s
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="async-call")
        self._lock = threading.Lock()
        self._calls = collections.OrderedDict()  # call_id -> Call, oldest first
        self._keys = {}                          # idempotency key -> Call
        self._pending = 0                        # async calls queued or running

    def invoke(self, meta, payload, key=None):
        """Run a call now, in this thread; (Call, replayed). With a key already used for this
        function and input, the first call's (waiting for it to finish), replayed True."""
        if key is None:
            call = Call(meta)
            self._execute(call, meta, payload)
            return call, False
        call, fresh = self._claim(meta, payload, key)
        if fresh:
            self._execute(call, meta, payload)
        elif not call.done.wait(int(meta.get("timeout_ms") or 5000) / 1000.0 + 60.0):
            raise Timeout("the first call with this Idempotency-Key is still running; ask again later",
                          call_id=call.call_id)
        return call, not fresh

    def submit(self, meta, payload, key=None):
        """Queue a call on the pool and return at once; (Call, replayed). Overloaded past the bound."""
        call, fresh = self._claim(meta, payload, key, is_async=True)
        if fresh:
            self._pool.submit(self._run_async, call, meta, payload)
        return call, not fresh

    def get(self, call_id):
        """A kept call, or None."""
        with self._lock:
            return self._calls.get(call_id)

    def close(self):
        """Stop taking async calls; those not started are dropped (the gateway is stopping)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- inside -----------------------------------------------------------------------------

    def _claim(self, meta, payload, key, is_async=False):
        """A new Call registered (and counted as pending if async), or the one holding `key`."""
        fingerprint = None
        if key is not None:
            fingerprint = hashlib.sha256(meta["name"].encode() + b"\0" + payload).hexdigest()
        with self._lock:
            self._prune()
            existing = self._keys.get(key) if key is not None else None
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise Conflict("Idempotency-Key %r was first used for another function or input "
                                   "(call %s on %s); use a new key for a new call"
                                   % (key, existing.call_id, existing.name), call_id=existing.call_id)
                return existing, False
            if is_async and self._pending >= self.max_pending:
                raise Overloaded("too many async calls waiting (%d); retry later" % self._pending,
                                 retry_after=RETRY_AFTER_S)
            call = Call(meta, key, fingerprint)
            call.kept = True
            self._calls[call.call_id] = call
            if key is not None:
                self._keys[key] = call
            if is_async:
                self._pending += 1
            return call, True

    def _run_async(self, call, meta, payload):
        try:
            self._execute(call, meta, payload)
        finally:
            with self._lock:
                self._pending -= 1

    def _execute(self, call, meta, payload):
        call.state = "running"
        started = time.perf_counter()
        try:
            outcome = self.client.invoke(meta, payload)
            fields = outcome_fields(outcome, round((time.perf_counter() - started) * 1000.0, 3))
            check_outcome(meta, outcome, fields)
            status, body = 200, dict(fields, ok=True)
        except FaasError as exc:
            status, body = exc.status, exc.to_dict()
        except Exception:
            log.exception("internal error running %s", meta["id"])
            status, body = 500, {"ok": False, "kind": "internal",
                                 "error": "internal error in the gateway; its log has the details"}
        measured = dict(body)
        measured.setdefault("duration_ms", round((time.perf_counter() - started) * 1000.0, 3))
        self.records.add(meta, status, measured, call.call_id if call.kept else None)
        self.metrics.invoked(meta["name"], status, measured)
        call.status, call.body = status, body
        call.finished, call.state = time.time(), "done"
        if call.key is not None and status in NOT_RUN:
            with self._lock:
                if self._keys.get(call.key) is call:
                    del self._keys[call.key]
        call.done.set()

    def _prune(self):
        """Forget the oldest finished calls past `keep` or older than `keep_for_s`. Caller holds the lock."""
        horizon = time.time() - self.keep_for_s
        while self._calls:
            call_id, oldest = next(iter(self._calls.items()))
            if oldest.state != "done" or (len(self._calls) <= self.keep and oldest.finished >= horizon):
                break
            del self._calls[call_id]
            if oldest.key is not None and self._keys.get(oldest.key) is oldest:
                del self._keys[oldest.key]
