"""The load injector against a tiny real HTTP server started in the test (keep-alive, errors, output)."""

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse

import pytest

from harness.load import injector

from support import ROOT  # noqa: E402


class FakeGateway(http.server.ThreadingHTTPServer):
    """Answers /invoke like the gateway: ok for any function but 'missing', which is a 404."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.bodies = []
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
        fn = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["fn"][0]
        if fn == "missing":
            status, answer = 404, {"ok": False, "error": "function not found", "kind": "not_found"}
        else:
            status, answer = 200, {"ok": True, "output": "hi", "worker": len(self.server.bodies) % 3,
                                   "cold": False}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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


def test_closed_loop_counts_every_request_on_kept_alive_connections(gateway):
    figures = injector.inject(gateway.url, "hello_1", threads=4, reqs=25, value="test data")
    assert figures["requests"] == 100
    assert figures["ok"] == 100
    assert figures["errors"] == {}
    # One connection per thread: keep-alive is what lets the injector outrun the platform.
    assert gateway.connections == 4
    assert json.loads(gateway.bodies[0]) == {"input": "test data"}
    assert sum(figures["workers"].values()) == 100
    lat = figures["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert sum(b["ok"] for b in figures["timeline"]) == 100


def test_errors_are_counted_by_kind(gateway):
    figures = injector.inject(gateway.url, "missing", threads=2, reqs=5)
    assert figures["ok"] == 0
    assert figures["errors"] == {"not_found": 10}


def test_connection_refused_is_an_error_not_a_crash():
    server = FakeGateway()
    url = server.url
    server.server_close()   # nothing listens there any more
    figures = injector.inject(url, "hello", threads=1, reqs=3)
    assert figures["errors"] == {"connection": 3}


def test_open_loop_sends_every_scheduled_request(gateway):
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
    proc = subprocess.run([sys.executable, "-m", "reference", "inject", "missing", "1", "2",
                           "--url", gateway.url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Errors: 2 (100.0%)" in proc.stdout
    assert "not_found=2" in proc.stdout
