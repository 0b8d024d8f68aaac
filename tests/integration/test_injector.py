"""The load injector against a tiny real HTTP server started in the test (keep-alive, errors, output)."""

import asyncio
import gc
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from support import ROOT  # noqa: E402

from harness.load import injector


class FakeGateway(http.server.ThreadingHTTPServer):
    """Answers /invoke like the gateway: ok for any function but 'missing', which is a 404."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.bodies = []
        self.in_flight = self.most_in_flight = 0
        self.per_connection = {}    # client address -> requests it sent
        self.lock = threading.Lock()
        self.url = "http://127.0.0.1:%d" % self.server_address[1]

    def get_request(self):
        with self.lock:
            self.connections += 1
        return super().get_request()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as the real gateway
    disable_nagle_algorithm = True  # headers and body go in two writes: without this, 40 ms delayed ACKs

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.bodies.append(body)
        with self.server.lock:
            self.server.per_connection[self.client_address] = self.server.per_connection.get(self.client_address, 0) + 1
        fn = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["fn"][0]
        if fn == "slow":
            with self.server.lock:
                self.server.in_flight += 1
                self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
            time.sleep(0.05)
            with self.server.lock:
                self.server.in_flight -= 1
        if fn == "missing":
            status, answer = 404, {"ok": False, "error": "function not found", "kind": "not_found"}
        else:
            status, answer = 200, {"ok": True, "output": "hi", "worker": len(self.server.bodies) % 3,
                                   "cold": False}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fn == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def gateway():
    server = FakeGateway()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_callback_errors(caplog):
    """An exception in an event-loop callback is only logged (asyncio's "Exception in callback"),
    never raised: any such log fails the test."""
    yield
    errors = [r.getMessage() for r in caplog.get_records("call") if r.name == "asyncio" and r.levelno >= 40]
    assert errors == []


@pytest.fixture(params=["protocol", "streams"])
def sender(request, monkeypatch):
    """The injector's senders: the protocols (the default) and the streams (the fallback)."""
    if request.param == "streams":
        monkeypatch.setenv("FAAS_INJECT_SENDER", "streams")
    else:
        monkeypatch.delenv("FAAS_INJECT_SENDER", raising=False)
    return request.param


def test_closed_loop_counts_every_request_on_kept_alive_connections(gateway, sender):
    figures = injector.inject(gateway.url, "hello_1", threads=4, reqs=25, value="test data")
    assert figures["requests"] == 100
    assert figures["ok"] == 100
    assert figures["errors"] == {}
    # One connection per thread, each with its thread's requests (the seed's "requests per
    # thread"): keep-alive is what lets the injector outrun the platform.
    assert gateway.connections == 4
    assert sorted(gateway.per_connection.values()) == [25] * 4
    assert json.loads(gateway.bodies[0]) == {"input": "test data"}
    assert sum(figures["workers"].values()) == 100
    lat = figures["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # The timeline keeps whole buckets only (test_stats): what completed in the last partial
    # bucket is in the totals above but not in it, so it may hold fewer, never more.
    timeline = figures["timeline"]
    width = timeline[0]["dt"]
    assert len(timeline) * width <= figures["duration_s"] + 1e-6 < (len(timeline) + 1) * width
    assert sum(b["ok"] for b in timeline) <= 100
    assert all(b["errors"] == 0 for b in timeline)


def test_errors_are_counted_by_kind(gateway, sender):
    figures = injector.inject(gateway.url, "missing", threads=2, reqs=5)
    assert figures["ok"] == 0
    assert figures["errors"] == {"not_found": 10}


def test_connection_refused_is_an_error_not_a_crash(sender):
    server = FakeGateway()
    url = server.url
    server.server_close()   # nothing listens there any more
    figures = injector.inject(url, "hello", threads=1, reqs=3)
    assert figures["errors"] == {"connection": 3}


def test_the_closed_loop_keeps_threads_requests_in_flight_never_more(gateway, sender):
    """Each answer sends the next at once: THREADS calls of 50 ms overlap, and never more."""
    samples, started, ended = injector.run_closed(gateway.url, "slow", 3, 4, injector.payload_for("x"))
    assert len(samples) == 12 and all(s.ok for s in samples)
    assert gateway.most_in_flight == 3 and gateway.connections == 3
    assert all(started <= s.intended <= s.sent <= s.done <= ended for s in samples)


def test_open_loop_sends_every_scheduled_request(gateway, sender):
    items = [(i * 0.01, "f", "f_1", injector.payload_for(str(i))) for i in range(30)]
    samples, started, ended, late = injector.run_schedule(gateway.url, items, senders=4)
    assert len(samples) == 30 and all(s.ok for s in samples)
    # Latency starts at the intended time, which is never after the actual send.
    assert all(s.intended <= s.sent <= s.done for s in samples)
    assert sorted(json.loads(b)["input"] for b in gateway.bodies) == sorted(str(i) for i in range(30))
    assert 0 <= late <= 30


def test_inject_command_prints_the_seed_block_and_writes_json(gateway, tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "-m", "reference", "inject", "hello_1", "3", "10",
                           "--url", gateway.url, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:8] == ["=== Load Injector ===", "Function ID: hello_1", "Threads: 3",
                         "Requests per thread: 10", "Total requests: 30", "=====================",
                         "", "=== Results ==="]
    assert "Total requests: 30" in lines[8:]
    assert "Successful: 30 (100.0%)" in lines
    assert "Errors: 0 (0.0%)" in lines
    assert any(l.startswith("Elapsed time: ") and l.endswith(" seconds") for l in lines)
    assert any(l.startswith("Requests/sec: ") for l in lines)
    assert any(l.startswith("Latency p99: ") for l in lines)
    assert lines[-1] == "==============="
    figures = json.loads(out.read_text())
    assert figures["requests"] == 30 and figures["ok"] == 30 and figures["threads"] == 3


def test_inject_command_fails_when_requests_fail(gateway):
    # The gateway from FAAS_URL, as the other client commands take it.
    proc = subprocess.run([sys.executable, "-m", "reference", "inject", "missing", "1", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "FAAS_URL": gateway.url})
    assert proc.returncode == 1
    assert "Errors: 2 (100.0%)" in proc.stdout
    assert "not_found=2" in proc.stdout
    # Every request failed: no success per second, however fast the failures came back.
    assert "(successful: 0.00)" in next(l for l in proc.stdout.splitlines() if l.startswith("Requests/sec:"))


def test_open_loop_counts_late_requests_when_every_connection_is_busy(gateway, sender):
    # 20 arrivals at once on 2 connections to a 50 ms function: most wait for a connection.
    items = [(0.0, "slow", "slow", injector.payload_for(str(i))) for i in range(20)]
    samples, started, ended, late = injector.run_schedule(gateway.url, items, senders=2)
    assert len(samples) == 20 and all(s.ok for s in samples)
    assert gateway.connections == 2
    assert late >= 16
    # The wait for a connection is in the latency (from the intended time): 10 rounds of 50 ms.
    assert max(s.latency_ms for s in samples) >= 450
    assert all(s.intended == started for s in samples)


@pytest.mark.parametrize("clock", ["timerfd", "sleep"])
def test_open_loop_keeps_its_schedule_and_never_sends_early(gateway, sender, monkeypatch, clock):
    """With the timerfd clock (the default) and the sleep clock (its fallback): gaps the clock
    waits for on its timer (20 ms) and gaps it waits for by going round the loop (50 us)."""
    monkeypatch.setenv("FAAS_INJECT_CLOCK", clock)
    offsets = [0.02 * i for i in range(25)] + [0.5 + 50e-6 * i for i in range(20)]
    items = [(offset, "f", "f_1", injector.payload_for(str(i))) for i, offset in enumerate(offsets)]
    samples, started, ended, late = injector.run_schedule(gateway.url, items, senders=8)
    intended = sorted(s.intended - started for s in samples)
    assert intended == pytest.approx(offsets)
    assert all(s.sent >= s.intended for s in samples)
    assert ended - started >= 0.5


def test_the_timerfd_clock_never_wakes_before_its_time():
    """The property the latencies rest on: a request is never sent before its intended time
    (latency counts from that time, so an early send would hide part of it)."""
    async def waits():
        clock = injector.schedule_clock(asyncio.get_running_loop())
        assert isinstance(clock, injector.TimerfdClock)
        woke = []
        try:
            for delay in (0.0, 20e-6, 90e-6, 150e-6, 400e-6, 1.3e-3, 2.5e-3, 7e-3) * 3:
                when = time.monotonic() + delay
                await clock.until(when)
                woke.append(time.monotonic() - when)
        finally:
            clock.close()
        return woke
    assert all(late >= 0 for late in injector.run_loop(waits()))


def test_a_connection_the_server_closes_is_opened_again(gateway, sender):
    figures = injector.inject(gateway.url, "close", threads=2, reqs=5)
    assert figures["ok"] == 10 and figures["errors"] == {}
    assert gateway.connections == 10   # one per request: the server closed each after its answer


def test_the_injector_records_its_cpu_share(gateway, sender):
    figures = injector.inject(gateway.url, "f_1", threads=2, reqs=20)
    assert 0.0 <= figures["injector_cpu_share"] <= 1.5
    # CPU of this thread, not wall time: on a shared machine the loop may get a fraction of a core.
    with injector.CpuMeter() as busy:
        start = time.thread_time()
        while time.thread_time() - start < 0.1:
            pass
    with injector.CpuMeter() as idle:
        time.sleep(0.2)
    assert busy.cpu_s >= 0.1 > 0.05 > idle.cpu_s
    assert idle.share < 0.25


def test_client_timeout_is_an_error_kind(gateway, sender):
    items = [(0.0, "slow", "slow", injector.payload_for("x"))]
    samples, _, _, _ = injector.run_schedule(gateway.url, items, senders=1, timeout=0.01)
    assert [s.kind for s in samples] == ["client_timeout"] and not samples[0].ok


def test_the_closed_loop_goes_on_past_timeouts(gateway, sender):
    """Each thread's next request follows its timed-out one on a new connection."""
    samples, _, _ = injector.run_closed(gateway.url, "slow", 2, 3, injector.payload_for("x"), timeout=0.01)
    assert [s.kind for s in samples] == ["client_timeout"] * 6
    assert gateway.connections == 6


def test_the_open_loop_opens_a_connection_again_after_connection_close(gateway, sender):
    items = [(i * 0.005, "close", "close", injector.payload_for(str(i))) for i in range(12)]
    samples, _, _, late = injector.run_schedule(gateway.url, items, senders=3)
    assert len(samples) == 12 and all(s.ok for s in samples), [s.kind for s in samples]
    assert gateway.connections == 12


def test_the_open_loop_against_nothing_counts_connection_errors(sender):
    server = FakeGateway()
    url = server.url
    server.server_close()
    items = [(i * 0.002, "f", "f", injector.payload_for(str(i))) for i in range(20)]
    samples, _, _, _ = injector.run_schedule(url, items, senders=4, timeout=5.0)
    assert [s.kind for s in samples] == ["connection"] * 20


class HostileServer:
    """A raw server on its own thread. Each connection gets a behaviour from `behaviours` (the
    last repeats): "drop-second" answers the first request and closes on the second, unanswered
    (a keep-alive the server ended as the request came); "drop" closes on the first; "garbage"
    answers without a Content-Length; "ok" answers every request."""

    ANSWER = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    def __init__(self, behaviours):
        self.behaviours, self.connections = list(behaviours), 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            behaviour = self.behaviours[min(self.connections, len(self.behaviours) - 1)]
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn, behaviour), daemon=True).start()

    def _answer(self, conn, behaviour):
        with conn:
            buffer, served = b"", 0
            while True:
                while b"\r\n\r\n" not in buffer or not _whole(buffer):
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[_whole(buffer):]
                if behaviour == "drop" or (behaviour == "drop-second" and served == 1):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n{}" if behaviour == "garbage" else self.ANSWER)
                served += 1

    def close(self):
        self.sock.close()


def _whole(buffer):
    """The length of the first whole request in `buffer`, or 0."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    length = int(buffer[:end].lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return end + 4 + length if len(buffer) >= end + 4 + length else 0


@pytest.mark.parametrize("behaviours, kinds, connections", [
    (["drop-second", "ok"], [None, None, None], 2),     # the second request is sent again, once
    (["drop-second", "drop", "ok"], [None, "connection", None], 3),     # and not a second time
    (["drop"], ["connection"] * 3, 3),                  # a connection that never answered: no retry
    (["garbage", "ok"], ["connection", None, None], 2),
])
@pytest.mark.parametrize("loop", ["open", "closed"])
def test_the_injector_against_a_hostile_server(sender, loop, behaviours, kinds, connections):
    """One connection, three requests one after the other: in the closed loop the connection is
    opened before the first request, and is still no stale keep-alive to send it again on."""
    server = HostileServer(behaviours)
    try:
        if loop == "open":
            items = [(i * 0.05, "f", "f", injector.payload_for(str(i))) for i in range(3)]
            samples, _, _, _ = injector.run_schedule(server.url, items, senders=1, timeout=5.0)
        else:
            samples, _, _ = injector.run_closed(server.url, "f", 1, 3, injector.payload_for("x"), timeout=5.0)
    finally:
        server.close()
    assert [s.kind for s in sorted(samples, key=lambda s: s.intended)] == kinds
    assert server.connections == connections


@pytest.fixture
def collections():
    """The generation of every garbage collection that starts while the test runs."""
    seen = []

    def watch(phase, info):
        if phase == "start":
            seen.append(info["generation"])
    gc.callbacks.append(watch)
    yield seen
    gc.callbacks.remove(watch)


def test_no_full_collection_pauses_a_run(collections):
    """A full collection walks every object of the process (20-40 ms with the samples of a few
    runs held): during a run none starts, the young ones still do, and the thresholds come back
    after it, also when two runs overlap on two threads."""
    def allocate():
        """The collections made while allocating past the point of a full one."""
        first = len(collections)
        held = [[i] for i in range(600_000)]
        assert len(held) == 600_000
        return collections[first:]

    async def allocate_in_run():
        return allocate()

    before = gc.get_threshold()
    assert 2 in allocate()                      # outside a run, this much makes a full one
    inside = injector.run_loop(allocate_in_run())
    assert 2 not in inside and 0 in inside
    assert gc.get_threshold() == before

    with injector.no_full_collections():
        other = threading.Thread(target=lambda: injector.run_loop(allocate_in_run()))
        other.start()
        other.join()
        assert gc.get_threshold()[2] == injector.FULL_COLLECTIONS_OFF   # the outer hold stands
    assert gc.get_threshold() == before
