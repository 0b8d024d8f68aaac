"""Running invocations for the gateway: sync and async calls, and idempotency keys.

Every invocation goes through `Calls`: it asks the server, turns the Outcome into the answer
(status and JSON body, `answer_for`), and writes the invocation record and the metrics. An
async call runs on a bounded thread pool and is kept for `GET /call/ID`. An Idempotency-Key
ties a call to one function and input: a retry gets the first call's answer, waiting for it if
it is still running; the same key with another function or input is a 409. Answers that mean
the call never ran (429 overloaded, 503 unavailable) are not kept for the key, so a retry runs it.

Kept calls (async or keyed) are bounded by count (`keep`) and by the size of their answers
(`keep_bytes`, output and stderr counted in characters): a call still running holds room for
the largest answer it may give. To make room, calls past `keep_for_s` go first, then the
oldest whose answer a client already has (a sync answer, or a finished call read back with
GET /call/ID). An answer nobody has fetched yet is never dropped for room: a new kept call
gets 429 instead, until one is fetched or expires.

With a Store (reference/gateway/store.py), async calls are durable: an async call's row, with
its input, is committed before its 202; its start and its answer are written as they happen,
and GET /call/ID answers from the store what memory no longer holds (after a restart, or once
forgotten to make room). A gateway that starts takes over the calls of a dead one (`recover`):
those not started run, those it was running end failed ("interrupted": the function may have
run in part or to its end, so it is not run twice), and callbacks not yet delivered are sent.
A keyed call (sync or async) has its row, with its key and fingerprint, before it runs: a retry
to a later gateway finds the key there and gets the first call's answer (or, if that call was
cut by its gateway's death, "interrupted"), never a second run.
With an X-Callback-Url (reference/gateway/callbacks.py), the finished call's view is POSTed
to it.
"""

import collections
import concurrent.futures
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time

from reference import config
from reference.gateway import store as store_mod
from reference.wire.errors import (
    BadRequest,
    Conflict,
    FaasError,
    FunctionFailed,
    MemoryLimit,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)

log = logging.getLogger(__name__)

ASYNC_THREADS = 8        # async calls running at once (each mostly waits on the server), but
                         # those of functions with a max_concurrency, which that bounds
ASYNC_PENDING = 256      # async calls queued or running; past this, 429
KEEP_CALLS = 1000        # calls kept (async or keyed) for GET /call/ID and retries ...
KEEP_BYTES = 256 * config.MIB   # ... holding at most this much answer text ...
KEEP_FOR_S = 3600.0      # ... each for at most this long
ANSWER_FIELDS_SIZE = 4 * config.KIB   # an answer's fields besides output and stderr, generously
NOT_RUN = (429, 503)     # answers a retry should not get back: the function never ran
RETRY_AFTER_S = 1
RECOVERED_RETRY_S = 60.0  # a recovered call answered 429/503 (the server not back yet) is retried this long


class Interrupted(FaasError):
    """The gateway stopped while it was running an async call: its answer is lost."""

    status, kind = 500, "interrupted"


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


def function_failure(meta, outcome, fields):
    """The error a function's run maps to (timeout, memory, could not run, non-zero exit),
    carrying the answer's fields; None when it ran and exited 0."""
    if outcome.error == "timeout":
        return Timeout("function timed out after %d ms (its timeout_ms limit)"
                       % meta["timeout_ms"], timeout_ms=meta["timeout_ms"], **fields)
    if outcome.error == "memory":
        return MemoryLimit("function went over its memory limit of %d MiB (memory_mb)"
                           % meta["memory_mb"], memory_mb=meta["memory_mb"], **fields)
    if outcome.error:
        return FunctionFailed("function could not run: %s" % (outcome.message or outcome.error),
                              reason=outcome.error, **fields)
    if outcome.exit_code != 0:
        return FunctionFailed("function exited with code %d" % outcome.exit_code, **fields)
    return None


def key_fingerprint(meta, payload):
    """What an Idempotency-Key is first used for, as kept with it: the function's name and the input."""
    return hashlib.sha256(meta["name"].encode() + b"\0" + payload).hexdigest()


def internal_error():
    """The body of a 500 for a bug of ours: what happened is in the log, not in the answer."""
    return {"ok": False, "kind": "internal", "error": "internal error in the gateway; its log has the details"}


def answer_for(meta, outcome, duration_ms):
    """The HTTP answer, (status, JSON body), to a run of function `meta` that the server
    reported as `outcome`: 200 with its output, or the status of the function's failure."""
    fields = outcome_fields(outcome, duration_ms)
    failure = function_failure(meta, outcome, fields)
    if failure is None:
        return 200, {"ok": True, **fields}     # "ok" first, as every answer starts
    return failure.status, failure.to_dict()


def answer_size(body):
    """What an answer counts against the kept-answers bound: its text, in characters."""
    return ANSWER_FIELDS_SIZE + sum(len(v) for v in body.values() if isinstance(v, str))


_RANDOM = {"bytes": b"", "at": 0}
_RANDOM_LOCK = store_mod.real_lock()
RANDOM_READ = 4096          # bytes of os.urandom read at once: 256 call ids a system call
# A forked child must not hand out its parent's next ids.
os.register_at_fork(after_in_child=lambda: _RANDOM.update(bytes=b"", at=0))


def new_call_id():
    """What uuid.uuid4().hex gives (16 bytes of os.urandom, version 4's bits set), without
    building the UUID object and with one getrandom for 256 ids: most of a sync call's
    bookkeeping cost."""
    with _RANDOM_LOCK:
        at = _RANDOM["at"]
        if at + 16 > len(_RANDOM["bytes"]):
            _RANDOM["bytes"], at = os.urandom(RANDOM_READ), 0
        raw = bytearray(_RANDOM["bytes"][at:at + 16])
        _RANDOM["at"] = at + 16
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


class TrackedCall:
    """One invocation through the gateway: its state, and once done its status and answer body.
    (Not reference.worker.wasm.wasi's Call, which is one WASI host call.)"""

    def __init__(self, meta, key=None, fingerprint=None, call_id=None, submitted=None, waitable=True):
        self.call_id = call_id or new_call_id()
        self.name, self.fn_id = meta["name"], meta["id"]
        self.key, self.fingerprint = key, fingerprint
        self.state = "queued"
        self.submitted = time.time() if submitted is None else submitted
        self.finished = None
        self.status, self.body = None, None
        # Set when the call is done, for those waiting on it; None for a call nobody else can
        # see (a sync call without a key: only its own request has it).
        self.done = threading.Event() if waitable else None
        self.kept = False       # registered for GET /call/ID (async or keyed)
        self.size = 0           # what it counts against the kept-answers bound
        self.delivered = False  # a client has its answer: it may be dropped to make room
        self.callback = None    # {"url", "state": pending|delivered|failed, "attempts", ...}

    def view(self):
        """What GET /call/ID answers: the state and, once done, the sync answer's fields with
        their HTTP-like `status`. "ok" says how the call went, as the sync answer's does: false
        once it is done and failed (with its "error"), true while it is queued or running."""
        answer = {"call_id": self.call_id, "state": self.state, "fn": self.name, "id": self.fn_id,
                  "submitted": round(self.submitted, 3), "ok": True}
        if self.state == "done":
            answer.update(self.body)
            answer.update(ok=self.status == 200 and self.body.get("ok", True) is True,
                          status=self.status, finished=round(self.finished, 3))
        if self.callback is not None:
            answer["callback"] = dict(self.callback)
        return answer

    @classmethod
    def from_row(cls, row):
        """A call as the store holds it (a row of CALL_COLUMNS)."""
        (call_id, name, fn_id, state, submitted, finished, status, body, callback) = row
        call = cls({"name": name, "id": fn_id}, call_id=call_id, submitted=submitted)
        call.state, call.finished, call.status = state, finished, status
        call.body = json.loads(body) if body else None
        call.callback = json.loads(callback) if callback else None
        if state == "done":
            call.done.set()
        return call


CALL_COLUMNS = "call_id, name, fn_id, state, submitted, finished, status, body, callback"
PENDING = "(state != 'done' OR callback_state = 'pending')"   # what a dead gateway left to do


class Calls:
    """Runs invocations through `client` (a ServerClient), recording each in `records`
    (InvocationRecords) and `metrics` (Metrics). Thread-safe."""

    def __init__(self, client, records, metrics, threads=ASYNC_THREADS, max_pending=ASYNC_PENDING,
                 keep=KEEP_CALLS, keep_for_s=KEEP_FOR_S, keep_bytes=KEEP_BYTES, limits=config.LIMITS,
                 store=None, callbacks=None):
        self.client, self.records, self.metrics = client, records, metrics
        self.store, self.callbacks = store, callbacks   # a Store: async calls are durable
        self.max_pending, self.keep, self.keep_for_s = max_pending, keep, keep_for_s
        self.keep_bytes = keep_bytes
        # Room held by a kept call still running: the largest output and stderr it may give.
        self.room_per_call = 2 * limits.output_bytes + ANSWER_FIELDS_SIZE
        if keep_bytes < self.room_per_call:
            raise ValueError("keeping answers needs at least %d bytes (twice the output limit), not %d"
                             % (self.room_per_call, keep_bytes))
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="async-call")
        # Calls of a function with a max_concurrency wait for their turn in its queue (admission.py)
        # before they run: on runners of their own, or seven calls waiting behind a slow limited
        # function would hold up every other function's async calls. They are bounded by the
        # pending bound, and while they run by their functions' max_concurrency.
        self._gated_pool = concurrent.futures.ThreadPoolExecutor(max_pending, thread_name_prefix="async-gated")
        self._lock = threading.Lock()
        self._calls = collections.OrderedDict()  # call_id -> TrackedCall, oldest first
        self._keys = {}                          # idempotency key -> TrackedCall
        self._kept_size = 0                      # sum of the kept calls' `size`
        self._async_in_flight = 0                # async calls queued or running

    def invoke(self, meta, payload, key=None):
        """Run a call now, in this thread; (TrackedCall, replayed). With a key already used for
        this function and input, the first call's (waiting for it to finish), replayed True."""
        if key is None:
            call = TrackedCall(meta, waitable=False)
            self._execute(call, meta, payload)
            return call, False
        call, fresh = self._claim(meta, payload, key)
        if fresh:
            try:
                self._accepted(call, None, "running")   # the key is on disk before the call runs
            except BaseException:
                self._unclaim(call, is_async=False)
                raise
            self._execute(call, meta, payload)
            if key is not None:
                self._finished(call)
        elif not call.done.wait(int(meta.get("timeout_ms") or 5000) / 1000.0 + 60.0):
            raise Timeout("the first call with this Idempotency-Key is still running; ask again later",
                          call_id=call.call_id)
        call.delivered = True  # the caller answers it now
        return call, not fresh

    def submit(self, meta, payload, key=None, callback_url=None):
        """Queue a call on the pool and return at once, once it is in the store (if any);
        (TrackedCall, replayed). Overloaded (429) past the bound on async calls, on kept
        answers or on callbacks waiting; Unavailable (503) when the store cannot take it. A
        replay keeps the first call's callback."""
        if callback_url is not None:
            if self.callbacks is None:
                raise BadRequest("this gateway sends no callbacks: drop X-Callback-Url")
            self.callbacks.reserve()
        call, fresh = None, False
        try:
            call, fresh = self._claim(meta, payload, key, is_async=True)
            if fresh:
                if callback_url is not None:
                    call.callback = {"url": callback_url, "state": "pending", "attempts": 0}
                self._accepted(call, payload, "queued")
        except BaseException:
            if fresh:
                self._unclaim(call, is_async=True)
            if callback_url is not None:
                self.callbacks.release()
            raise
        if callback_url is not None and not fresh:
            self.callbacks.release()
        if fresh:
            self._runners(meta).submit(self._run_async, call, meta, payload)
        return call, not fresh

    def _runners(self, meta):
        return self._gated_pool if meta.get("max_concurrency") else self._pool

    def get(self, call_id):
        """A kept call, or None."""
        with self._lock:
            return self._calls.get(call_id)

    def fetch(self, call_id):
        """GET /call/ID: a kept call's view (from memory, else from the store), or None; a
        finished call read back counts as delivered (it may then make room for others)."""
        call = self.get(call_id)
        if call is None:
            call = self.stored(call_id)
        if call is None:
            return None
        view = call.view()
        if view["state"] == "done":
            call.delivered = True
        return view

    def kept(self):
        """(calls kept, their size): what the bounds count."""
        with self._lock:
            return len(self._calls), self._kept_size

    def close(self):
        """Stop taking async calls; those not started are dropped (the gateway is stopping:
        with a store, the next gateway runs them), callbacks are no longer sent."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._gated_pool.shutdown(wait=False, cancel_futures=True)
        if self.callbacks is not None:
            self.callbacks.close()
        if self.store is not None:
            self.store.close()   # the records still queued are written

    # -- durable async calls ---------------------------------------------------------------

    def stored(self, call_id):
        """The call `call_id` as the store has it (a TrackedCall), or None."""
        return self._stored("call_id = ?", call_id)

    def _stored_key(self, key):
        """The call the store holds for Idempotency-Key `key` (one a gateway before this one
        ran), with its key and fingerprint, or None."""
        try:
            return self._stored("idem_key = ? ORDER BY seq DESC LIMIT 1", key)
        except sqlite3.Error as exc:
            log.error("cannot read %s: %s", self.store.path, exc)
            raise Unavailable("the gateway cannot read its store (%s) to see whether this Idempotency-Key "
                              "was used; retry later" % exc, retry_after=RETRY_AFTER_S) from None

    def _stored(self, where, value):
        """The first call of `SELECT ... FROM calls WHERE <where>` as a TrackedCall, or None."""
        if self.store is None:
            return None
        rows = self.store.read("SELECT %s, idem_key, fingerprint FROM calls WHERE %s" % (CALL_COLUMNS, where),
                               (value,), flush=False)
        if not rows:
            return None
        call = TrackedCall.from_row(rows[0][:-2])
        call.key, call.fingerprint = rows[0][-2:]
        return call

    def recover(self, lookup):
        """At start, before taking calls: take over what gateways that died left in the store
        (queued calls run, running calls end Interrupted, undelivered callbacks are sent);
        `lookup(fn_id)` gives a function version's metadata (Storage.get). {what: how many}."""
        found = {"run": 0, "interrupted": 0, "callbacks": 0}
        if self.store is None:
            return found
        me = self.store.owner
        owners = [owner for (owner,) in self.store.read("SELECT DISTINCT owner FROM calls WHERE " + PENDING,
                                                       flush=False)
                  if owner != me and not store_mod.owner_alive(owner)]
        if not owners:
            return found
        self.store.write([("UPDATE calls SET owner = ? WHERE owner = ? AND " + PENDING, (me, owner))
                          for owner in owners])
        rows = self.store.read("SELECT %s, payload, idem_key, fingerprint FROM calls WHERE owner = ? AND %s "
                               "ORDER BY seq" % (CALL_COLUMNS, PENDING), (me,), flush=False)
        for row in rows:
            call, payload = TrackedCall.from_row(row[:-3]), row[-3] or b""
            call.key, call.fingerprint = row[-2], row[-1]
            if call.callback is not None and self.callbacks is not None:
                self.callbacks.reserve(force=True)
            if call.state == "done":   # only its callback is left
                found["callbacks"] += 1
                self._deliver(call)
                continue
            meta = lookup(call.fn_id) if call.state == "queued" else None
            if meta is not None:
                found["run"] += 1
                with self._lock:
                    call.kept, call.size = True, self.room_per_call
                    self._calls[call.call_id] = call
                    self._kept_size += call.size
                    self._async_in_flight += 1
                    if call.key is not None:
                        self._keys[call.key] = call
                self._runners(meta).submit(self._run_async, call, meta, payload, RECOVERED_RETRY_S)
                continue
            found["interrupted"] += 1
            if call.state == "queued":
                failure = NotFound("function not found: version %s was deleted before this async call ran"
                                   % call.fn_id, fn=call.fn_id)
            else:
                failure = Interrupted("the gateway stopped while this call was running: the function "
                                      "may have run in part or to its end, and its answer is lost (it is not "
                                      "run again; call it again if that is safe)")
            call.status, call.body = failure.status, failure.to_dict()
            call.finished, call.state = time.time(), "done"
            call.done.set()
            self._finished(call)
            self._deliver(call)
        log.info("took over the async calls of a stopped gateway: %d to run, %d interrupted, %d callbacks "
                 "to send", found["run"], found["interrupted"], found["callbacks"])
        return found

    def _accepted(self, call, payload, state):
        """The call's row, committed before the call is answered 202 (an async call: "queued",
        with its input, which a gateway taking over runs) or run (a keyed sync call: "running",
        without it: a gateway taking over ends it interrupted, and a retry with the key gets
        that). Nothing to do without a store, or for a sync call without a key."""
        if self.store is None or (state == "running" and call.key is None):
            return
        callback = call.callback
        try:
            self.store.write([(
                "INSERT INTO calls (call_id, name, fn_id, owner, state, submitted, payload, callback_url, "
                "callback_state, callback, idem_key, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (call.call_id, call.name, call.fn_id, self.store.owner, state, call.submitted, payload,
                 callback and callback["url"], callback and callback["state"],
                 callback and store_mod.encode(callback), call.key, call.fingerprint))])
        except sqlite3.Error as exc:
            log.error("cannot write call %s to %s: %s", call.call_id, self.store.path, exc)
            raise Unavailable("the gateway cannot record the %s in its store (%s), so it does not run it; "
                              "retry later" % ("async call" if state == "queued" else "call's Idempotency-Key",
                                               exc), retry_after=RETRY_AFTER_S) from None

    def _durably(self, sql, params):
        if self.store is None:
            return
        try:
            self.store.write([(sql, params)])
        except sqlite3.Error as exc:
            log.error("cannot write to %s: %s", self.store.path, exc)

    def _finished(self, call):
        """The call's answer in its row (a keyed call that never ran, 429 or 503, lets go of its
        key there too, as in memory: a retry runs it)."""
        released = ", idem_key = NULL" if call.key is not None and call.status in NOT_RUN else ""
        self._durably("UPDATE calls SET state = 'done', finished = ?, status = ?, body = ?, size = ?, "
                      "payload = NULL%s WHERE call_id = ?" % released,
                      (call.finished, call.status, store_mod.encode(call.body), answer_size(call.body),
                       call.call_id))

    def _deliver(self, call):
        if call.callback is not None and self.callbacks is not None:
            self.callbacks.deliver(call, self.callback_done)

    def callback_done(self, call):
        """Callbacks' report: the call's callback was delivered or given up on."""
        self._durably("UPDATE calls SET callback_state = ?, callback = ? WHERE call_id = ?",
                      (call.callback["state"], store_mod.encode(call.callback), call.call_id))

    def _unclaim(self, call, is_async):
        """Undo a fresh claim whose call could not be accepted."""
        with self._lock:
            if self._calls.get(call.call_id) is call:
                self._forget(call)
            if is_async:
                self._async_in_flight -= 1

    # -- inside -----------------------------------------------------------------------------

    def _claim(self, meta, payload, key, is_async=False):
        """A new TrackedCall registered (holding room for its answer, counted as in flight if
        async), or the one holding `key`."""
        fingerprint = stored = None
        if key is not None:
            fingerprint = key_fingerprint(meta, payload)
            if key not in self._keys:
                stored = self._stored_key(key)
        with self._lock:
            existing = self._keys.get(key) if key is not None else None
            if existing is None and stored is not None:
                if stored.state != "done" and not is_async:
                    raise Timeout("the first call with this Idempotency-Key is still running in another "
                                  "gateway; ask again later", call_id=stored.call_id)
                existing = stored
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise Conflict("Idempotency-Key %r was first used for another function or input "
                                   "(call %s on %s); use a new key for a new call"
                                   % (key, existing.call_id, existing.name), call_id=existing.call_id)
                return existing, False
            if is_async and self._async_in_flight >= self.max_pending:
                raise Overloaded("too many async calls waiting (%d); retry later" % self._async_in_flight,
                                 retry_after=RETRY_AFTER_S)
            self._make_room(self.room_per_call)
            call = TrackedCall(meta, key, fingerprint)
            call.kept, call.size = True, self.room_per_call
            self._calls[call.call_id] = call
            self._kept_size += call.size
            if key is not None:
                self._keys[key] = call
            if is_async:
                self._async_in_flight += 1
            return call, True

    def _run_async(self, call, meta, payload, retry_not_run_s=0.0):
        try:
            self._durably("UPDATE calls SET state = 'running', payload = NULL, started = ? WHERE call_id = ?",
                          (time.time(), call.call_id))
            self._execute(call, meta, payload, retry_not_run_s)
            self._finished(call)
        finally:
            with self._lock:
                self._async_in_flight -= 1
        self._deliver(call)

    def _execute(self, call, meta, payload, retry_not_run_s=0.0):
        call.state = "running"
        deadline = time.monotonic() + retry_not_run_s
        while True:
            started = time.perf_counter()
            try:
                outcome = self.client.invoke(meta, payload)
                status, body = answer_for(meta, outcome, round((time.perf_counter() - started) * 1000.0, 3))
            except FaasError as exc:   # the platform failed (server down, overloaded, worker lost)
                status, body = exc.status, exc.to_dict()
            except Exception:
                log.exception("internal error running %s", meta["id"])
                status, body = 500, internal_error()
            if status not in NOT_RUN or time.monotonic() + RETRY_AFTER_S > deadline:
                break
            time.sleep(RETRY_AFTER_S)   # a recovered call: the server may not be back yet
        measured = body     # records and metrics only read it
        if "duration_ms" not in body:   # the platform failed: the time until it said so
            measured = dict(body, duration_ms=round((time.perf_counter() - started) * 1000.0, 3))
        self.records.add(meta, status, measured, call.call_id)
        self.metrics.invoked(meta["name"], status, measured)
        call.status, call.body = status, body
        if call.kept:
            with self._lock:
                # The room it held becomes the size of the answer it gave.
                size = answer_size(body)
                self._kept_size += size - call.size
                call.size = size
                if call.key is not None and status in NOT_RUN and self._keys.get(call.key) is call:
                    del self._keys[call.key]
        call.finished, call.state = time.time(), "done"
        if call.done is not None:
            call.done.set()

    def _make_room(self, size):
        """Forget kept calls until one more of `size` fits within `keep` and `keep_bytes`:
        first those past `keep_for_s`, then the oldest whose answer was delivered. Overloaded
        (429) when what is left is all owed to a client. Caller holds the lock."""
        horizon = time.time() - self.keep_for_s
        # Claim order is submission order, so the expired are all near the front.
        for call in list(self._calls.values()):
            if call.submitted >= horizon:
                break
            if call.state == "done" and call.finished < horizon:
                self._forget(call)
        if self._fits(size):
            return
        for call in list(self._calls.values()):
            if call.state == "done" and call.delivered:
                self._forget(call)
                if self._fits(size):
                    return
        owed = sum(1 for call in self._calls.values() if not (call.state == "done" and call.delivered))
        raise Overloaded("the gateway keeps answers for async and keyed calls, and its room (%d calls, "
                         "%d MiB) is full of %d calls running or not fetched yet (GET /call/ID); retry later"
                         % (self.keep, self.keep_bytes // config.MIB, owed), retry_after=RETRY_AFTER_S)

    def _fits(self, size):
        return len(self._calls) < self.keep and self._kept_size + size <= self.keep_bytes

    def _forget(self, call):
        del self._calls[call.call_id]
        self._kept_size -= call.size
        if call.key is not None and self._keys.get(call.key) is call:
            del self._keys[call.key]
