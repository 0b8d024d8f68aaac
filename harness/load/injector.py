"""The load injector: keep-alive HTTP/1.1 clients on an asyncio (uvloop) event loop that invoke
functions and time every answer.

`minifaas inject FN THREADS REQS` is the seed's closed loop (THREADS connections send THREADS x
REQS requests back to back); `run_schedule` is the open loop the scenarios use (arrivals at fixed
times, latency counted from the intended send time so a slow platform cannot hide its queue).

One event loop in one thread, requests prebuilt as bytes, answers parsed by hand and with
orjson: on this 2-core machine the injector must drive at least 3 x what the stack serves
(tests/bench/bench_injector.py measures it against wrk), or the figures measure the client.
`CpuMeter` gives the share of a core it used, which every run records. The open loop waits
for each send on a timerfd (TimerfdClock; FAAS_INJECT_CLOCK=sleep for the asyncio.sleep
fallback): it used to spin a core from about 2,000 requests a second. Both loops send through
asyncio protocols (harness/load/senders.py; FAAS_INJECT_SENDER=streams for the streams and the
task per request or connection they had before).
"""

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import os
import resource
import sys
import threading
import time
import urllib.parse

import orjson

from harness.analysis import stats

try:
    import uvloop
except ImportError:   # plain asyncio works, only slower
    uvloop = None

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
# A request sent later than this after its intended time is counted late: the injector (all
# its connections busy, or its loop behind), not the platform, was the limit for it.
LATE_S = 0.010
MAX_HEADER = 65536
# The oldest generation's threshold while a run goes on: a count of young collections no run
# reaches (a full collection also waits for a quarter of the old objects to be new).
FULL_COLLECTIONS_OFF = 10 ** 9


@dataclasses.dataclass(slots=True)
class Sample:
    """One invocation as the client saw it (times from time.monotonic())."""
    fn: str
    intended: float
    sent: float
    done: float
    status: int          # HTTP status, 0 when no answer came
    ok: bool
    kind: str = None     # error kind when not ok: the answer's `kind`, `http_N`, or a client failure
    worker: object = None
    cold: bool = None
    # The platform's own split of the call (worker side): time in its queue, in the runtime's
    # start (cold calls), in the function. Slowdown is latency / exec_ms.
    queue_ms: float = None
    init_ms: float = None
    exec_ms: float = None

    @property
    def latency_ms(self):
        return (self.done - self.intended) * 1000.0


class CpuMeter:
    """CPU time of the calling thread (where the event loop runs) over wall time: the share of
    one core the injector used. Over 0.5 the injector may have been the limit."""

    def __enter__(self):
        self.cpu0, self.wall0 = self._cpu(), time.monotonic()
        self.share = None
        return self

    def __exit__(self, *exc):
        wall = max(time.monotonic() - self.wall0, 1e-9)
        self.cpu_s = self._cpu() - self.cpu0
        self.share = self.cpu_s / wall

    @staticmethod
    def _cpu():
        usage = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
        return usage.ru_utime + usage.ru_stime


def _new_loop():
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def run_loop(coro):
    """Run `coro` to the end on a fresh (uvloop) event loop in this thread, with no full garbage
    collection meanwhile (no_full_collections)."""
    loop = _new_loop()
    try:
        with no_full_collections():
            return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


_gc_lock = threading.Lock()
_gc_held = {"count": 0, "thresholds": None}


@contextlib.contextmanager
def no_full_collections():
    """Hold off Python's full (oldest-generation) garbage collections while a run sends and
    times requests. A full collection walks every object in the process, the samples of the
    runs before included (16 ms with 50,000 held, 58 ms with 500,000): every answer that came
    meanwhile was timed late by as much, and every send due then went late (docs/PERFORMANCE.md,
    "The injector's own pauses"). None is forced before the run either: the callers' CPU meters
    count it. The young generations still run (under 1 ms each), so cycles made during the run
    are still freed; a run makes almost none. Nests, and across threads: the first hold sets
    the threshold, the last puts it back."""
    with _gc_lock:
        if _gc_held["count"] == 0:
            _gc_held["thresholds"] = gc.get_threshold()
            young, middle, _ = _gc_held["thresholds"]
            gc.set_threshold(young, middle, FULL_COLLECTIONS_OFF)
        _gc_held["count"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_held["count"] -= 1
            if _gc_held["count"] == 0:
                gc.set_threshold(*_gc_held["thresholds"])


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway, used by one coroutine at a time."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None
        self.answers = 0    # on this connection: one that never answered is not a stale keep-alive

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER)
        self.answers = 0

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def exchange(self, request):
        """Send prebuilt request bytes, return (status, body bytes). A kept-alive connection the
        server closed while idle is opened again once: the request never got there."""
        for attempt in (1, 2):
            if self.writer is None:
                await self.open()
            reused = self.answers > 0
            try:
                answer = await self._exchange(request)
                self.answers += 1
                return answer
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                self.close()
                if not reused or attempt == 2:
                    raise ConnectionError(str(e)) from None

    async def _exchange(self, request):
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        end = head.find(b"\r\n")
        status = int(head[9:12]) if end >= 12 else 0
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i < 0:
            raise ConnectionError("an answer without Content-Length")
        length = int(lower[i + 17:lower.find(b"\r\n", i + 2)])
        body = await self.reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body


def request_bytes(host, port, fn_id, payload):
    """The whole POST /invoke request, built once per function and input."""
    head = ("POST /invoke?fn=%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (urllib.parse.quote(fn_id), host, port, len(payload)))
    return head.encode() + payload


def address(url):
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or 80


async def _invoke(conn, request, name, intended, sent):
    """One invocation on `conn` as a Sample; never raises for a platform or network failure."""
    try:
        async with asyncio.timeout(conn.timeout):
            status, body = await conn.exchange(request)
    except TimeoutError:
        conn.close()
        return Sample(name, intended, sent, time.monotonic(), 0, False, "client_timeout")
    except (OSError, ValueError):
        conn.close()
        return Sample(name, intended, sent, time.monotonic(), 0, False, "connection")
    return answer_sample(name, intended, sent, time.monotonic(), status, body)


def answer_sample(name, intended, sent, done, status, body):
    """The Sample of an answered request: ok only for a 200 whose JSON says "ok": true."""
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        answer = {"ok": False, "kind": "bad_answer"}
    if not isinstance(answer, dict):
        answer = {}
    ok = status == 200 and answer.get("ok") is True
    kind = None if ok else (answer.get("kind") or "http_%d" % status)
    return Sample(name, intended, sent, done, status, ok, kind, answer.get("worker"), answer.get("cold"),
                  answer.get("queue_ms"), answer.get("init_ms"), answer.get("exec_ms"))


class Client:
    """A blocking keep-alive client for the harness's few one-off calls (deploy, first call)."""

    def __init__(self, url=DEFAULT_URL, timeout=60.0):
        import http.client
        self._http = http.client
        self.host, self.port = address(url)
        self.timeout = timeout
        self.conn = None

    def post(self, path, body, content_type="application/json"):
        """POST and return (status, decoded JSON body or {}); raises OSError/HTTPException if no answer."""
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = self._http.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                break
            except (self._http.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or attempt == 2:
                    raise
            except (OSError, self._http.HTTPException):
                self.close()
                raise
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"ok": False, "kind": "bad_answer", "error": data[:200].decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {}

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def payload_for(value):
    """The invocation body: the seed's {"input": ...}."""
    return json.dumps({"input": value}).encode()


def run_closed(url, fn_id, threads, requests, payload, name=None, progress=None, timeout=60.0):
    """THREADS x REQUESTS invocations, back to back on THREADS kept-alive connections (opened
    before the run starts): each answer sends the next on its connection, so THREADS are in
    flight until the last ones. Returns (samples, started, ended) in monotonic time. (THREADS is
    the seed's word: here they are connections on one loop.)"""
    name = name or fn_id
    host, port = address(url)
    request = request_bytes(host, port, fn_id, payload)
    if os.environ.get("FAAS_INJECT_SENDER") == "streams":
        return run_loop(_closed_streams(host, port, request, threads, requests, name, progress, timeout))
    from harness.load import senders
    return run_loop(senders.closed(url, name, request, threads, requests, progress, timeout))


async def _closed_streams(host, port, request, threads, requests, name, progress, timeout):
    """The closed loop on asyncio streams, a coroutine per connection doing REQUESTS: the
    fallback of senders.closed (FAAS_INJECT_SENDER=streams), which takes about 20 % less CPU a
    request."""
    conns = [Connection(host, port, timeout) for _ in range(threads)]
    opened = await asyncio.gather(*(c.open() for c in conns), return_exceptions=True)
    for c, failure in zip(conns, opened):
        if failure is not None:
            c.close()   # counted per request below, as `connection` errors

    async def loop(conn, out):
        for _ in range(requests):
            now = time.monotonic()
            out.append(await _invoke(conn, request, name, now, now))
            if progress:
                progress(1)
        conn.close()

    per_conn = [[] for _ in conns]
    started = time.monotonic()
    await asyncio.gather(*(loop(c, out) for c, out in zip(conns, per_conn)))
    ended = time.monotonic()
    return [s for out in per_conn for s in out], started, ended


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerfdClock:
    """Waits until a time.monotonic() instant on a Linux timerfd in the event loop: the loop
    sleeps in epoll until the kernel's timer fires (within the timer slack, about 50 us).
    uvloop's own timers count whole milliseconds, so waiting for a send less than a millisecond
    away meant going round the loop until it came: from about 2,000 requests a second the open
    loop spun a whole core that way (5,000 a second: 0.99 of a core, 0.27 with the timer), a
    core taken from the stack it measures on a 2-core machine. `close` releases the fd."""

    CLOCK_MONOTONIC, TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1
    # A send due sooner than this is waited for by going round the loop: arming the timer and
    # waking on it cost more (at 15,000 requests a second, 66 us apart, the timer alone fell
    # 1.7 % late where going round kept every send on time).
    SPIN_S = 100e-6

    def __init__(self, loop):
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        self.fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create: " + os.strerror(ctypes.get_errno()))
        self.loop, self.waiter, self.spec = loop, None, _Itimerspec()
        loop.add_reader(self.fd, self._fired)

    async def until(self, when):
        delay = when - time.monotonic()
        if delay <= 0:
            return
        if delay < self.SPIN_S:
            while time.monotonic() < when:
                await asyncio.sleep(0)      # once round the loop: cheaper than arming the timer
            return
        self.spec.it_value.tv_sec, fraction = int(when), when - int(when)
        self.spec.it_value.tv_nsec = min(int(fraction * 1e9), 999_999_999)
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, ctypes.byref(self.spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime: " + os.strerror(ctypes.get_errno()))
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _fired(self):
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return              # re-armed before this read: not this wait's expiry
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def close(self):
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


class SleepClock:
    """The fallback where there is no timerfd: asyncio.sleep, then round the loop until the time."""

    async def until(self, when):
        delay = when - time.monotonic()
        while delay > 0:   # uvloop's timers count whole milliseconds: it may wake up early
            await asyncio.sleep(delay)
            delay = when - time.monotonic()

    def close(self):
        pass


def schedule_clock(loop):
    """TimerfdClock where the kernel has timerfd (Linux), else SleepClock."""
    if os.environ.get("FAAS_INJECT_CLOCK") == "sleep":
        return SleepClock()
    try:
        return TimerfdClock(loop)
    except (OSError, AttributeError):
        return SleepClock()


def run_schedule(url, items, senders, progress=None, timeout=60.0):
    """Send each (offset s, name, fn_id, payload) at its offset from now over at most `senders`
    keep-alive connections (opened as needed). Returns (samples, started, ended, late).

    Latency is measured from the intended time, so a request that waited for a free connection
    still counts its wait; `late` counts those sent more than LATE_S after their time.
    """
    return run_loop(_schedule(url, items, senders, progress, timeout))


async def _schedule(url, items, senders, progress, timeout, started=None):
    host, port = address(url)
    built = {}
    plan = []
    for offset, name, fn_id, payload in sorted(items, key=lambda item: item[0]):
        key = (fn_id, payload)
        if key not in built:
            built[key] = request_bytes(host, port, fn_id, payload)
        plan.append((offset, name, built[key]))
    started = (time.monotonic() + 0.02) if started is None else started
    if os.environ.get("FAAS_INJECT_SENDER") == "streams":
        samples, ended = await _schedule_streams(url, plan, senders, progress, timeout, started)
    else:
        from harness.load import senders as protocols
        samples, ended = await protocols.schedule(url, plan, senders, progress, timeout, started)
    late = sum(1 for s in samples if s.sent - s.intended > LATE_S)
    return samples, started, ended, late


async def _schedule_streams(url, plan, senders, progress, timeout, started):
    """The open loop on asyncio streams, a task per request: the fallback of senders.schedule
    (FAAS_INJECT_SENDER=streams), with the same contract and about twice its CPU a request."""
    host, port = address(url)
    free = asyncio.Queue()
    opened = [0]
    samples = []
    tasks = set()

    async def send(intended, name, request):
        if free.empty() and opened[0] < senders:
            opened[0] += 1
            conn = Connection(host, port, timeout)
        else:
            conn = await free.get()
        sample = await _invoke(conn, request, name, intended, time.monotonic())
        samples.append(sample)
        free.put_nowait(conn)
        if progress:
            progress(1)

    clock = schedule_clock(asyncio.get_running_loop())
    try:
        for offset, name, request in plan:
            intended = started + offset
            await clock.until(intended)
            task = asyncio.ensure_future(send(intended, name, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        clock.close()
    if tasks:
        await asyncio.gather(*tasks)
    ended = time.monotonic()
    while not free.empty():
        free.get_nowait().close()
    return samples, ended


def summarize(samples, started, ended):
    """Every figure of one run: counts, errors by kind, throughput, latency, timeline, per worker."""
    duration = max(ended - started, 1e-9)
    ok = [s for s in samples if s.ok]
    errors = {}
    for s in samples:
        if not s.ok:
            errors[s.kind] = errors.get(s.kind, 0) + 1
    workers = {}
    for s in ok:
        key = str(s.worker)
        workers[key] = workers.get(key, 0) + 1
    latencies = [s.latency_ms for s in ok]
    per_function = {}
    for name in sorted({s.fn for s in samples}):
        mine = [s for s in samples if s.fn == name]
        mine_ok = [s.latency_ms for s in mine if s.ok]
        per_function[name] = {"requests": len(mine), "ok": len(mine_ok),
                              "latency_ms": stats.latency_summary(mine_ok),
                              "p99_ci95": stats.quantile_ci(mine_ok, 0.99)}
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": errors,
        "duration_s": duration,
        "throughput_rps": len(ok) / duration,
        "latency_ms": stats.latency_summary(latencies),
        "latency_quantiles_ms": stats.quantiles(latencies),
        "latency_ccdf": stats.ccdf(latencies),
        "p99_ci95": stats.quantile_ci(latencies, 0.99),
        "timeline": stats.timeline([(s.done - started, s.ok, s.latency_ms) for s in samples], duration),
        "workers": workers,
        "per_function": per_function,
    }


# -- minifaas inject ---------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("fn", metavar="FN", help="function id (or name) to invoke")
    parser.add_argument("threads", metavar="THREADS", type=int,
                        help="concurrent keep-alive connections (the seed's threads)")
    parser.add_argument("reqs", metavar="REQS", type=int, help="requests per thread")
    parser.add_argument("--url", default=os.environ.get("FAAS_URL") or DEFAULT_URL,
                        help="gateway URL (env FAAS_URL, default %s)" % DEFAULT_URL)
    parser.add_argument("--input", default="test data", help="input sent to the function (default 'test data')")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer (default 60)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE as JSON")


def format_summary(fn, threads, reqs, figures):
    """The seed's two blocks, with the latency percentiles added inside the results block."""
    total = figures["requests"]
    errors = total - figures["ok"]
    pct = (lambda n: 100.0 * n / total) if total else (lambda n: 0.0)
    lat = figures["latency_ms"]
    ms = lambda v: "n/a" if v is None else "%.2f ms" % v
    lines = [
        "=== Load Injector ===",
        "Function ID: %s" % fn,
        "Threads: %d" % threads,
        "Requests per thread: %d" % reqs,
        "Total requests: %d" % (threads * reqs),
        "=====================",
        "",
        "=== Results ===",
        "Total requests: %d" % total,
        "Successful: %d (%.1f%%)" % (figures["ok"], pct(figures["ok"])),
        "Errors: %d (%.1f%%)" % (errors, pct(errors)),
        "Elapsed time: %.2f seconds" % figures["duration_s"],
        # Answered requests (the seed's figure), then only the successful ones: a run where every
        # request failed must not read as a fast one.
        "Requests/sec: %.2f (successful: %.2f)" % (figures["requests_per_s"], figures["throughput_rps"]),
        "Latency p50: %s" % ms(lat["p50"]),
        "Latency p90: %s" % ms(lat["p90"]),
        "Latency p99: %s" % ms(lat["p99"]),
        "Latency max: %s" % ms(lat["max"]),
        "Injector CPU: %.0f%% of a core" % (100.0 * (figures.get("injector_cpu_share") or 0.0)),
        "===============",
    ]
    if figures["errors"]:
        lines.append("Errors by kind: " + ", ".join("%s=%d" % kv for kv in sorted(figures["errors"].items())))
    return "\n".join(lines)


def inject(url, fn, threads, reqs, value="test data", timeout=60.0):
    """Run the seed's load test and return its figures (the dict `--json` writes)."""
    with CpuMeter() as cpu:
        samples, started, ended = run_closed(url, fn, threads, reqs, payload_for(value), timeout=timeout)
    figures = summarize(samples, started, ended)
    figures["injector_cpu_share"] = cpu.share
    figures["requests_per_s"] = len(samples) / figures["duration_s"]
    figures.update(function=fn, threads=threads, requests_per_thread=reqs, url=url)
    return figures


def cli(args):
    if args.threads < 1 or args.reqs < 1:
        print("minifaas inject: THREADS and REQS must be at least 1", file=sys.stderr)
        return 2
    figures = inject(args.url, args.fn, args.threads, args.reqs, args.input, args.timeout)
    print(format_summary(args.fn, args.threads, args.reqs, figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0 if figures["ok"] == figures["requests"] else 1
