"""Hostile clients against a real gateway (issue 15), over raw sockets on 127.0.0.1: a slowloris,
idle keep-alive connections past the connection limit, clients that never read large answers,
50 MB headers, trailers, pipelining and broken URLs. Each attack is bounded in count and time,
and each test asserts that a second, normal client is served while it goes on.

The gateway runs as `minifaas gateway` of its own (with a balancer and a server), so that it can
be given --max-connections and its memory can be read from /proc. Run with `-s` to see the
figures (docs/PERFORMANCE.md, "Hostile clients").
"""

import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from support import stop_group

from harness.run.stack import free_port

MAX_CONNECTIONS = 1500      # below the slowloris's 2,000, so the limit's room-making is exercised too
KEY = "abuse-test-key"
AUTH = {"Authorization": "Bearer " + KEY}
SERVED_WITHIN_S = 5.0       # the design says a second; the machine is shared and noisy


def _raise_open_files(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def normal_request(port, method="GET", path="/health", body=None, timeout=30):
    """(status, seconds) of one request on a new connection, as any client would make it."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=AUTH)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - start
    finally:
        conn.close()


class NormalClient(threading.Thread):
    """Asks /health every `every` seconds until stopped; keeps each (status, seconds)."""

    def __init__(self, port, every=0.5):
        super().__init__(daemon=True)
        self.port, self.every, self.results = port, every, []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.results.append(normal_request(self.port))
            except OSError as exc:
                self.results.append((repr(exc), None))
            self.stopping.wait(self.every)

    def stop(self):
        self.stopping.set()
        self.join(60)
        return self.results


def assert_served(results):
    assert results, "the normal client made no request"
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed
    slowest = max(seconds for _, seconds in results)
    assert slowest < SERVED_WITHIN_S, results
    return slowest


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def report(what, **figures):
    print("\nABUSE %s: %s" % (what, json.dumps(figures, sort_keys=True)))


@pytest.fixture(scope="module")
def gateway():
    """A balancer, a server with one worker and a gateway with --max-connections 1500 and an API key."""
    _raise_open_files(2 * MAX_CONNECTIONS + 1000)
    with tempfile.TemporaryDirectory(prefix="minifaas-abuse-") as tmp:
        lb, server = os.path.join(tmp, "lb.sock"), os.path.join(tmp, "server.sock")
        port = free_port()
        base = [sys.executable, "-m", "reference", "--log-level", "WARNING"]
        commands = [
            base + ["balancer", "--lb-sock", lb],
            base + ["server", "--workers", "1", "--lb-sock", lb, "--server-sock", server],
            base + ["gateway", "--port", str(port), "--functions", os.path.join(tmp, "functions"),
                    "--server-sock", server, "--max-connections", str(MAX_CONNECTIONS)],
        ]
        log_path = os.path.join(tmp, "gateway.log")
        procs = []
        with open(log_path, "w+b") as log:
            try:
                for argv in commands:
                    procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  env=dict(os.environ, FAAS_API_KEY=KEY), start_new_session=True))
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if normal_request(port, timeout=2)[0] == 200:
                            break
                    except OSError:
                        pass
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        pytest.fail("the gateway did not come up:\n" + open(log_path, errors="replace").read())
                    time.sleep(0.1)
                yield {"port": port, "pid": procs[-1].pid, "log": log_path}
            finally:
                for proc in reversed(procs):
                    stop_group(proc)


def open_connections(port, count, first_bytes=b""):
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def answers_of(socks):
    """How each connection ended so far: its first answer's status line, 'closed', or 'open'."""
    counts = {}
    for sock in socks:
        try:
            data = sock.recv(64)
            what = data.split(b"\r\n", 1)[0].decode() if data else "closed"
        except BlockingIOError:
            what = "open"
        except OSError:
            what = "closed"
        counts[what] = counts.get(what, 0) + 1
    return counts


def test_a_slowloris_of_2000_connections_does_not_shut_out_a_normal_client(gateway):
    """2,000 connections drip a header byte every 4 s for 14 s: past the 10 s header timeout."""
    assert _raise_open_files(2500) >= 2500
    port = gateway["port"]
    start = time.monotonic()
    socks = open_connections(port, 2000, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
    opened_s = time.monotonic() - start
    normal = NormalClient(port)
    normal.start()
    try:
        dripping = time.monotonic()
        while time.monotonic() - dripping < 14:
            round_start = time.monotonic()
            for sock in socks:
                try:
                    sock.send(b"a")
                except OSError:
                    pass                            # closed by the gateway: nothing more to send
                time.sleep(4.0 / len(socks))        # each connection gets a byte every 4 s
            time.sleep(max(0.0, 4.0 - (time.monotonic() - round_start)))
    finally:
        results = normal.stop()
        ends = answers_of(socks)
        for sock in socks:
            sock.close()
    slowest = assert_served(results)
    assert "HTTP/1.1 200 OK" not in ends            # no slow request was ever let through
    assert ends.get("open", 0) == 0, ends           # every one ended: 408 at its deadline, or evicted
    report("slowloris", connections=2000, opened_s=round(opened_s, 2), normal_requests=len(results),
           normal_slowest_s=round(slowest, 3), ends=ends, rss_mb=rss_mb(gateway["pid"]))


def test_idle_keep_alive_connections_past_the_limit_make_room(gateway):
    port = gateway["port"]
    count = MAX_CONNECTIONS + 100
    socks = []
    try:
        for _ in range(count):                      # each makes a request, reads it, then idles
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            socks.append(sock)
        for sock in socks:
            try:
                sock.recv(65536)
            except OSError:
                pass
            sock.setblocking(False)
        results = [normal_request(port) for _ in range(5)]
        ends = answers_of(socks)
    finally:
        for sock in socks:
            sock.close()
    slowest = assert_served(results)
    assert ends.get("closed", 0) >= 100             # the oldest idle ones were closed for the new ones
    report("idle keep-alive", connections=count, max_connections=MAX_CONNECTIONS,
           normal_slowest_s=round(slowest, 3), ends=ends)


def _non_readers(port, clients, pipelined):
    """`clients` connections that each ask for the big function's code `pipelined` times and
    never read an answer."""
    ask = (b"GET /function/bigcode HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n"
           % KEY.encode())
    socks = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(ask * pipelined)
        socks.append(sock)
    return socks


def test_clients_that_never_read_large_answers_do_not_stop_the_gateway(gateway):
    """300 clients ask for a function's ~900 KB of code and never read the answer; then 30 ask
    for it 8 times each (7 MB unread a connection: more than the kernel's socket buffers take)."""
    port, pid = gateway["port"], gateway["pid"]
    code = b"def main(data):\n    return data\n" + b"# " + b"x" * 900_000 + b"\n"
    status, _ = normal_request(port, "POST", "/deploy?name=bigcode&lang=python", body=code)
    assert status == 201
    figures = {"answer_bytes": len(code)}
    for clients, pipelined in ((300, 1), (30, 8)):
        before = rss_mb(pid)
        socks = []
        try:
            socks = _non_readers(port, clients, pipelined)
            # Making the answers is the app's CPU (one thread): wait for that burst to pass,
            # then measure while they stay unread.
            burst_s = normal_request(port, timeout=60)[1]
            normal = NormalClient(port)
            normal.start()
            time.sleep(5)
            during = rss_mb(pid)
            results = normal.stop()
            invoke = normal_request(port, "POST", "/invoke?fn=bigcode", body=b'{"input": 1}')
        finally:
            for sock in socks:
                sock.close()
        slowest = assert_served(results)
        assert invoke[0] == 200
        assert during - before < clients * 8        # at most the 8 MiB output buffer each
        figures["%dx%d" % (clients, pipelined)] = dict(
            burst_s=round(burst_s, 2), normal_requests=len(results), normal_slowest_s=round(slowest, 3),
            rss_before_mb=round(before), rss_during_mb=round(during),
            rss_per_client_mb=round((during - before) / clients, 2))
    report("non-readers", **figures)


def _send_huge_header(port, size, outcomes):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        outcomes.append(repr(exc))
        return
    with sock:
        start = time.monotonic()
        sent = 0
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            chunk = b"v" * (1 << 20)
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass                                    # refused before the end, as it should be
        try:
            answer = sock.recv(64).split(b"\r\n", 1)[0].decode() or "closed"
        except OSError:
            answer = "reset"
        outcomes.append((answer, sent, round(time.monotonic() - start, 2)))


def test_50_mb_headers_do_not_freeze_the_gateway(gateway):
    """Four senders at a time, 50 MB header values, for 8 s."""
    port = gateway["port"]
    normal = NormalClient(port, every=0.25)
    normal.start()
    outcomes = []
    try:
        stop_at = time.monotonic() + 8
        while time.monotonic() < stop_at:
            senders = [threading.Thread(target=_send_huge_header, args=(port, 50 << 20, outcomes), daemon=True)
                       for _ in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join(60)
    finally:
        results = normal.stop()
    slowest = assert_served(results)
    answers = {answer for answer, _, _ in outcomes}
    assert answers <= {"HTTP/1.1 431 Request Header Fields Too Large", "reset", "closed"}, outcomes
    assert all(sent < 50 << 20 for _, sent, _ in outcomes), outcomes
    report("50 MB headers", senders=len(outcomes), normal_requests=len(results),
           normal_slowest_s=round(slowest, 3), answers=sorted(answers),
           most_sent_mb=round(max(sent for _, sent, _ in outcomes) / (1 << 20), 1))


def raw_exchange(port, data, timeout=10):
    """Everything the gateway answers to `data` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while (chunk := sock.recv(65536)):
            out += chunk
        return out


def test_an_authorization_sent_as_a_trailer_is_not_accepted(gateway):
    body = b"def main(data):\n    return data\n"
    out = raw_exchange(gateway["port"],
                       b"POST /deploy?name=trailer&lang=python HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       b"%x\r\n%s\r\n0\r\nAuthorization: Bearer %s\r\n\r\n" % (len(body), body, KEY.encode()))
    assert out.startswith(b"HTTP/1.1 401 ")
    assert normal_request(gateway["port"])[0] == 200


def test_a_bad_request_pipelined_behind_good_ones_is_answered_after_them(gateway):
    out = raw_exchange(gateway["port"], b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2 + b"BAD\x01 / HTTP/1.1\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"200", b"200", b"400"]
    assert out.rstrip().endswith(b'"kind": "bad_request"}')


def test_long_and_unparsable_urls_are_answered_414_and_400(gateway):
    port = gateway["port"]
    long_url = raw_exchange(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    broken = raw_exchange(port, b"GET http://[::1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert long_url.startswith(b"HTTP/1.1 414 ") and b'"kind": "uri_too_long"' in long_url
    assert broken.startswith(b"HTTP/1.1 400 ") and b'"kind": "bad_request"' in broken


def test_a_body_over_the_limit_is_refused_from_its_length_with_expect(gateway):
    out = raw_exchange(gateway["port"], b"POST /invoke?fn=bigcode HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                        b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in out


def test_the_gateway_logged_no_traceback(gateway):
    with open(gateway["log"], errors="replace") as f:
        log = f.read()
    assert "Traceback" not in log, log[-5000:]
