"""The load injector: keep-alive HTTP clients that invoke functions and time every answer.

`minifaas inject FN THREADS REQS` is the seed's closed loop (each thread sends its requests back
to back); `run_schedule` is the open loop the scenarios use (arrivals at fixed times, latency
counted from the intended send time so a slow platform cannot hide its queue).
"""

import dataclasses
import http.client
import json
import logging
import queue
import sys
import threading
import time
import urllib.parse

from harness.analysis import stats

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
# A request whose sender picked it up later than this after its intended time is counted late:
# the injector's own sender pool, not the platform, was the limit for it.
LATE_S = 0.010


@dataclasses.dataclass
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

    @property
    def latency_ms(self):
        return (self.done - self.intended) * 1000.0


class Client:
    """One keep-alive HTTP/1.1 connection to the gateway; one per thread (http.client is not thread-safe)."""

    def __init__(self, url=DEFAULT_URL, timeout=60.0):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.conn = None

    def post(self, path, body, content_type="application/json"):
        """POST and return (status, decoded JSON body or {}); raises OSError/HTTPException if no answer."""
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                # A kept-alive connection the server closed while idle: the request never got
                # there, so sending it once more on a fresh connection is safe.
                if not reused or attempt == 2:
                    raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"ok": False, "kind": "bad_answer", "error": data[:200].decode(errors="replace")}
        return resp.status, answer if isinstance(answer, dict) else {}

    def invoke(self, fn_id, payload, name=None, intended=None):
        """Invoke `fn_id` with `payload` (bytes) and return a Sample."""
        sent = time.monotonic()
        path = "/invoke?fn=" + urllib.parse.quote(fn_id)
        try:
            status, answer = self.post(path, payload)
        except TimeoutError:
            return Sample(name or fn_id, intended or sent, sent, time.monotonic(), 0, False, "client_timeout")
        except (OSError, http.client.HTTPException):
            return Sample(name or fn_id, intended or sent, sent, time.monotonic(), 0, False, "connection")
        done = time.monotonic()
        ok = status == 200 and answer.get("ok") is True
        kind = None if ok else (answer.get("kind") or "http_%d" % status)
        return Sample(name or fn_id, intended or sent, sent, done, status, ok, kind,
                      answer.get("worker"), answer.get("cold"))

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def payload_for(value):
    """The invocation body: the seed's {"input": ...}."""
    return json.dumps({"input": value}).encode()


def run_closed(url, fn_id, threads, requests, payload, name=None, progress=None, timeout=60.0):
    """THREADS x REQUESTS back-to-back invocations; returns (samples, started, ended) in monotonic time."""
    per_thread = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def loop(out):
        client = Client(url, timeout)
        try:
            barrier.wait()
            for _ in range(requests):
                out.append(client.invoke(fn_id, payload, name))
                if progress:
                    progress(1)
        finally:
            client.close()

    workers = [threading.Thread(target=loop, args=(out,), daemon=True) for out in per_thread]
    for t in workers:
        t.start()
    barrier.wait()
    started = time.monotonic()
    for t in workers:
        t.join()
    ended = time.monotonic()
    return [s for out in per_thread for s in out], started, ended


def run_schedule(url, items, senders, progress=None, timeout=60.0):
    """Send each (offset s, name, fn_id, payload) at its offset from now, from a pool of `senders` threads.

    Returns (samples, started, ended, late). Latency is measured from the intended time, so a
    request that waited for a free sender still counts its wait; `late` counts those.
    """
    pending = queue.Queue()
    samples = []
    late = [0] * senders

    def sender(i):
        client = Client(url, timeout)
        try:
            while True:
                item = pending.get()
                if item is None:
                    return
                intended, name, fn_id, payload = item
                if time.monotonic() - intended > LATE_S:
                    late[i] += 1
                samples.append(client.invoke(fn_id, payload, name, intended))
                if progress:
                    progress(1)
        finally:
            client.close()

    pool = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
    for t in pool:
        t.start()
    started = time.monotonic() + 0.05   # let the senders reach their queue first
    for offset, name, fn_id, payload in sorted(items, key=lambda item: item[0]):
        intended = started + offset
        delay = intended - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pending.put((intended, name, fn_id, payload))
    for _ in pool:
        pending.put(None)
    for t in pool:
        t.join()
    ended = time.monotonic()
    return samples, started, ended, sum(late)


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
                              "latency_ms": stats.latency_summary(mine_ok)}
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": errors,
        "duration_s": duration,
        "throughput_rps": len(ok) / duration,
        "latency_ms": stats.latency_summary(latencies),
        "latency_quantiles_ms": stats.quantiles(latencies),
        "timeline": stats.timeline([(s.done - started, s.ok, s.latency_ms) for s in samples], duration),
        "workers": workers,
        "per_function": per_function,
    }


# -- minifaas inject ---------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("fn", metavar="FN", help="function id (or name) to invoke")
    parser.add_argument("threads", metavar="THREADS", type=int, help="concurrent client threads")
    parser.add_argument("reqs", metavar="REQS", type=int, help="requests per thread")
    parser.add_argument("--url", default=DEFAULT_URL, help="gateway URL (default %s)" % DEFAULT_URL)
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
        "Requests/sec: %.2f" % figures["requests_per_s"],
        "Latency p50: %s" % ms(lat["p50"]),
        "Latency p90: %s" % ms(lat["p90"]),
        "Latency p99: %s" % ms(lat["p99"]),
        "Latency max: %s" % ms(lat["max"]),
        "===============",
    ]
    if figures["errors"]:
        lines.append("Errors by kind: " + ", ".join("%s=%d" % kv for kv in sorted(figures["errors"].items())))
    return "\n".join(lines)


def inject(url, fn, threads, reqs, value="test data", timeout=60.0):
    """Run the seed's load test and return its figures (the dict `--json` writes)."""
    samples, started, ended = run_closed(url, fn, threads, reqs, payload_for(value), timeout=timeout)
    figures = summarize(samples, started, ended)
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
