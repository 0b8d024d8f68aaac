"""The gateway's connection to the server: one UNIX socket shared by every HTTP thread.

Each call sends a frame with a fresh request id and waits for the answer with that id, so many
invocations are in flight on one connection. A reader thread hands answers to their callers.
When the connection is lost every waiting call fails at once with Unavailable, and the next
call tries to connect again: the gateway never hangs on a dead server.

A call waits for its answer without a timer of its own: one sweeper thread, started with the
connection, fails the calls past their deadline every SWEEP_S (a timer per call, armed and
cancelled under gevent, was about 5 % of the gateway's CPU per call). A deadline is kept to
within SWEEP_S.

In a gevent-patched process (`minifaas gateway`, reference/cli.py) there is no reader thread:
the answers are read in gevent's hub, by a callback of the loop's watcher on the socket, and
each goes straight to the greenlet waiting for it through a gevent Waiter: no reader greenlet,
no failed reads, no gevent Event. With the HTTP connections read the same way, that took about
7 % off the gateway's CPU per request through the stack (docs/PERFORMANCE.md, "A ninth look").
Threads (`--http waitress`, the tests' plain processes) keep the reader thread.
"""

import itertools
import logging
import os
import socket
import threading
import time

from reference import config
from reference.wire import framing, ops
from reference.wire.errors import FaasError, Timeout, Unavailable, from_wire
from reference.wire.jobs import Outcome

try:
    from gevent import getcurrent, spawn
    from gevent.hub import Waiter
except ImportError:         # the gateway runs without gevent under waitress
    getcurrent = spawn = Waiter = None

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
# Beyond the function's own time limit, how long a call may wait in the server's queues.
QUEUE_ALLOWANCE_S = 60.0
SWEEP_S = 0.25          # how often calls past their deadline are failed


def _gevent_hub():
    """gevent's hub when this process is monkey-patched (threads are greenlets), else None."""
    if Waiter is None:
        return None
    from gevent import monkey
    from gevent.hub import get_hub
    return get_hub() if monkey.is_module_patched("threading") else None


class _Slot:
    """A call waiting for its answer: `settle()` (from any thread, or the hub) wakes `wait()`."""

    __slots__ = ("event", "header", "body", "error", "deadline", "timeout")

    def __init__(self, timeout, event=None):
        self.event = threading.Event() if event is None else event
        self.header = self.body = self.error = None
        self.timeout, self.deadline = timeout, time.monotonic() + timeout

    def wait(self):
        self.event.wait()

    def settle(self):
        self.event.set()


class _HubSlot(_Slot):
    """A slot under gevent: a Waiter, switched to from the hub at once, or by a callback the
    hub runs when it is settled from a greenlet (a Waiter is switched to only from the hub)."""

    __slots__ = ("hub",)

    def __init__(self, timeout, hub):
        super().__init__(timeout, Waiter())
        self.hub = hub

    def wait(self):
        self.event.get()

    def settle(self):
        if getcurrent() is self.hub:
            self.event.switch(None)
        else:
            self.hub.loop.run_callback(self.event.switch, None)


class _HubReader:
    """The answers of one connection, read in gevent's hub: the loop's watcher on the socket
    calls `readable`, which reads what has arrived into a FrameSink and settles each answer's
    slot, switching to its greenlet there and then. On EOF or an error the connection is dropped
    (its waiting calls fail) and the socket closed, as the reader thread does."""

    def __init__(self, client, sock, hub):
        self.client, self.sock = client, sock
        self.fd = sock.fileno()
        self.sink = framing.FrameSink(client._answered)
        self.watcher = hub.loop.io(self.fd, 1)      # 1: readable
        self.watcher.start(self.readable)

    def readable(self):
        try:
            while True:
                space = self.sink.space()
                try:
                    n = os.readv(self.fd, [space])
                except BlockingIOError:
                    return
                if not n:
                    self._end("server unavailable: the connection was closed"
                              + (" inside a frame" if self.sink.pending() else ""))
                    return
                self.sink.filled(n)
                if n < len(space):
                    # A short read took all there was: the watcher is level-triggered and calls
                    # again when more comes. Reading on would fail (EAGAIN) once a wake-up.
                    return
        except (OSError, FaasError) as exc:
            self._end("server unavailable: %s" % exc)

    def _end(self, reason):
        self.watcher.stop()
        self.watcher.close()
        # In a greenlet of its own: the hub must not block, and a call may hold the lock while
        # its send waits for room on this socket.
        spawn(self._dropped, reason)

    def _dropped(self, reason):
        with self.client._lock:
            self.client._drop(self.sock, reason)
        self.sock.close()   # only here: the watcher never reads a reused fd


class ServerClient:
    """`limits`: the contract's limits (reference.config.Limits) this gateway runs with; a
    function's own timeout and memory come from its metadata, and the rest (the output cap)
    from here."""

    def __init__(self, path, limits=config.LIMITS):
        self.path = path
        self.limits = limits
        self._lock = threading.Lock()   # guards the socket, its writes and the awaited table
        self._sock = None
        self._awaited = {}              # request id -> (socket, _Slot) of a call waiting for its answer
        self._ids = itertools.count(1)
        self._sweeper = None            # the thread failing calls past their deadline
        self._closed = False
        self._hub = _gevent_hub()       # None: a reader thread; else answers read in the hub

    def invoke(self, meta, payload, limits=None, env=None):
        """Run the function described by `meta` (storage metadata) on `payload`; an Outcome.
        `limits` overrides the client's own for this call; `env` is the function's environment
        (its env and secrets: Storage.environment).

        Platform failures (server or balancer down, overload, a worker lost) raise FaasError.
        """
        limits = limits or self.limits
        timeout_ms = int(meta.get("timeout_ms") or limits.timeout_ms)
        header = ops.invoke(meta["id"], meta["dir"], meta["lang"], timeout_ms,
                            int(meta.get("memory_mb") or limits.memory_mb), limits.output_bytes)
        if meta.get("reuse"):
            header["reuse"] = True      # only when asked: the frame of an ordinary call stays as it was
        if env:
            header["env"] = env         # the function's env and secrets (reference/wire/jobs.py)
        answer, body = self.call(header, payload, timeout_ms / 1000.0 + QUEUE_ALLOWANCE_S)
        return Outcome.from_wire(answer, body)

    def stats(self):
        return self.call(ops.stats(), timeout=5.0)[0]

    def health(self):
        return self.call(ops.health(), timeout=2.0)[0]

    def call(self, header, body=b"", timeout=30.0):
        slot = _Slot(timeout) if self._hub is None else _HubSlot(timeout, self._hub)
        with self._lock:
            sock = self._connected()
            req = next(self._ids)
            self._awaited[req] = (sock, slot)
            try:
                framing.send_all(sock, framing.encode(dict(header, req=req), body))
            except OSError as exc:
                self._awaited.pop(req, None)
                self._drop(sock, "server unavailable: %s" % exc)
                raise Unavailable("server unavailable: %s" % exc) from None
        slot.wait()                 # settled by the reader, a lost connection or the sweeper
        if slot.error is not None:
            raise slot.error
        if "fault" in slot.header:
            raise from_wire(slot.header)
        return slot.header, slot.body

    def close(self):
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._drop(self._sock, "client closed")

    def _connected(self):
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise Unavailable("server unavailable: cannot connect to %s (%s); is `minifaas server` running?"
                              % (self.path, exc.strerror or exc)) from None
        sock.settimeout(None)
        self._sock = sock
        self._closed = False            # a closed client used again connects again
        if self._hub is None:
            threading.Thread(target=self._read_answers, args=(sock,), name="server-client", daemon=True).start()
        else:
            _HubReader(self, sock, self._hub)
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="server-client-sweep", daemon=True)
            self._sweeper.start()
        return sock

    def _sweep(self):
        """Fail the calls past their deadline, every SWEEP_S, until the client is closed."""
        while True:
            time.sleep(SWEEP_S)
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    self._sweeper = None
                    return
                late = [req for req, (_, slot) in list(self._awaited.items()) if slot.deadline <= now]
                # The reader pops without the lock: whoever pops a call's entry settles it.
                slots = [entry[1] for entry in (self._awaited.pop(req, None) for req in late) if entry]
            for slot in slots:
                slot.error = Timeout("no answer from the server within %g s" % round(slot.timeout, 3))
                slot.settle()

    def _read_answers(self, sock):
        reason = "server unavailable: the connection was closed"
        frames = framing.FrameReader(sock)
        try:
            while True:
                self._answered(*frames.read_frame())
        except (EOFError, OSError, FaasError) as exc:
            if not isinstance(exc, EOFError):
                reason = "server unavailable: %s" % exc
        with self._lock:
            self._drop(sock, reason)
        sock.close()  # only this thread closes, so its blocking read never sees a reused fd

    def _answered(self, header, body):
        # dict.pop is atomic: no lock per answer (the sweeper and _drop pop the same way).
        _, slot = self._awaited.pop(header.get("req"), (None, None))
        if slot is not None:
            slot.header, slot.body = header, body
            slot.settle()

    def _drop(self, sock, reason):
        """Forget a dead connection and fail every call waiting on it. Caller holds the lock."""
        if self._sock is sock:
            self._sock = None
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread, which closes the socket
        except OSError:
            pass
        for req, (owner, slot) in list(self._awaited.items()):
            if owner is sock and self._awaited.pop(req, None) is not None:
                slot.error = Unavailable(reason)
                slot.settle()
