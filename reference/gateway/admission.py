"""Per-function admission: at most `max_concurrency` calls of a function in flight, the next
ones waiting in that function's queue in the gateway (at most `max_queue`, else 429 with
Retry-After), admitted first come, first served as calls end.

`Admission` wraps the gateway's client (a ServerClient): every call of every kind (sync,
async, keyed, /run) goes through its `invoke`, so the server, and so the balancer's strategies,
see only admitted calls. It also hands the call its environment (the function's env and
secrets, read from the storage), so secrets go to the server in the Job and nowhere else.

Thread-safe with threading's primitives, which the gevent gateway has monkey-patched into
greenlet ones (a waiting call costs a greenlet, not a thread); waitress's threads use them as
they are. A call waits at most `max_wait_s` for its turn, then gets 429 too: a queue whose head
does not move is a queue to come back to later.
"""

import collections
import threading

from reference.wire.errors import Overloaded

DEFAULT_QUEUE = 100         # waiting calls per function when its deploy did not say max_queue
MAX_WAIT_S = 60.0           # the longest a call waits for its turn
RETRY_AFTER_S = 1


class _Waiter:
    __slots__ = ("event", "admitted")

    def __init__(self):
        self.event, self.admitted = threading.Event(), False


class _Function:
    """One function's calls in flight and its queue (name -> _Function while any is there)."""

    __slots__ = ("in_flight", "queue")

    def __init__(self):
        self.in_flight, self.queue = 0, collections.deque()


class Admission:
    """A client that admits each function's calls within its `max_concurrency` before handing
    them to `client`; functions without the setting pass straight through."""

    def __init__(self, client, storage, max_wait_s=MAX_WAIT_S):
        self.client, self.storage, self.max_wait_s = client, storage, max_wait_s
        self._lock = threading.Lock()
        self._functions = {}        # name -> _Function, only while it has calls in flight or waiting
        self._totals = collections.Counter()    # name -> calls refused (429) by the admission

    def __getattr__(self, name):
        # stats(), health(), close() ...: the client's own.
        return getattr(self.client, name)

    def invoke(self, meta, payload, limits=None):
        env = self.storage.environment(meta) if (meta.get("env") or meta.get("secrets")) else None
        kwargs = {"limits": limits} if limits is not None else {}
        if env:
            kwargs["env"] = env
        limit = meta.get("max_concurrency")
        if not limit:
            return self.client.invoke(meta, payload, **kwargs)
        self._enter(meta["name"], limit, meta.get("max_queue"))
        try:
            return self.client.invoke(meta, payload, **kwargs)
        finally:
            self._leave(meta["name"], limit)

    def view(self, name, meta=None):
        """A function's admission as GET /function/NAME/concurrency answers it."""
        with self._lock:
            state = self._functions.get(name)
            view = {"in_flight": state.in_flight if state else 0, "waiting": len(state.queue) if state else 0,
                    "refused": self._totals[name]}
        if meta is not None:
            view["max_concurrency"] = meta.get("max_concurrency")
            view["max_queue"] = _queue_bound(meta.get("max_queue")) if meta.get("max_concurrency") else None
        return view

    def _enter(self, name, limit, max_queue):
        with self._lock:
            state = self._functions.get(name)
            if state is None:
                state = self._functions[name] = _Function()
            if state.in_flight < limit and not state.queue:
                state.in_flight += 1
                return
            bound = _queue_bound(max_queue)
            if len(state.queue) >= bound:
                self._totals[name] += 1
                raise Overloaded("function %s has %d calls running (its max_concurrency) and %d waiting "
                                 "(its max_queue): retry later" % (name, state.in_flight, len(state.queue)),
                                 retry_after=RETRY_AFTER_S, max_concurrency=limit, max_queue=bound)
            waiter = _Waiter()
            state.queue.append(waiter)
        waiter.event.wait(self.max_wait_s)
        with self._lock:
            if waiter.admitted:
                return
            # Not admitted in time: out of the queue (a call that ended may have handed it its
            # turn just now: then `admitted` is set, and it was dealt with above).
            state.queue.remove(waiter)
            self._totals[name] += 1
            self._forget_if_idle(name, state)
        raise Overloaded("function %s: no turn within %.0f s (its max_concurrency is %d); retry later"
                         % (name, self.max_wait_s, limit), retry_after=RETRY_AFTER_S, max_concurrency=limit)

    def _leave(self, name, limit):
        with self._lock:
            state = self._functions[name]
            state.in_flight -= 1
            # The slot goes to the oldest waiter (FIFO; a newcomer cannot take it first).
            while state.queue and state.in_flight < limit:
                waiter = state.queue.popleft()
                waiter.admitted = True
                state.in_flight += 1
                waiter.event.set()
            self._forget_if_idle(name, state)

    def _forget_if_idle(self, name, state):
        if state.in_flight == 0 and not state.queue:
            self._functions.pop(name, None)


def _queue_bound(max_queue):
    return DEFAULT_QUEUE if max_queue is None else max_queue
