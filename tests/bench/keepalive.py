"""A lean keep-alive HTTP load client for the benchmarks: raw sockets and a prebuilt request, so
that on a 2-core machine the client costs as little CPU as possible next to the server it measures.

`run(url, path, body, clients, duration)` keeps `clients` connections busy back to back and
returns requests/s, latency percentiles and the CPU the client itself used. With `rate`, the
same connections send on a fixed schedule instead (rate/clients a second each, their sends
spread evenly), so that two stacks can be compared at the same rate; a send that falls behind
its schedule goes at once and is counted as late.
"""

import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request


def request_bytes(host, port, path, body):
    head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (path, host, port, len(body)))
    return head.encode() + body


class Connection:
    """One keep-alive connection; `call()` sends the prebuilt request and returns (status, body)."""

    def __init__(self, host, port, request):
        self.address, self.request = (host, port), request
        self.sock, self.buffer, self.reconnects = None, b"", 0
        self._connect()

    def _connect(self):
        self.sock = socket.create_connection(self.address, timeout=60)
        # Small requests must not wait for delayed ACKs (Nagle): that would measure the kernel.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def call(self):
        try:
            return self._call()
        except ConnectionError:
            # A server may close a kept-alive connection between answers (it is allowed to);
            # the request did not get there, so it is sent again on a new connection, counted.
            self.sock.close()
            self.reconnects += 1
            self._connect()
            return self._call()

    def _call(self):
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                raise RuntimeError("chunked answers are not supported by this client")
        if length is None:
            raise RuntimeError("answer without Content-Length: %r" % head[:200])
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length]

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def _fill(self):
        self.buffer += self._recv()

    def close(self):
        self.sock.close()


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(url, path, body, clients=16, duration=3.0, warmup=0.5, check=b'"ok": true', rate=None):
    """Keep `clients` connections busy for warmup + duration seconds (or, with `rate`, send
    `rate` requests a second across them on a fixed schedule); figures of the measured part.

    Only answers that complete inside the measured window count. An answer that is not a 200
    containing `check` is an error (counted, and the first one kept to show).
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port
    request = request_bytes(host, port, path, body)
    start_barrier = threading.Barrier(clients + 1)
    window = {}
    results = [None] * clients

    interval = clients / rate if rate else 0.0

    def client(i):
        latencies, errors, first_error, late = [], 0, None, 0
        conn = Connection(host, port, request)
        try:
            start_barrier.wait()
            begin, end = window["begin"], window["end"]
            due = window["start"] + interval * i / clients
            while True:
                if rate:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    else:
                        late += wait < -interval       # a whole interval behind
                    due += interval
                sent = time.perf_counter()
                if sent >= end:
                    break
                status, answer = conn.call()
                done = time.perf_counter()
                if done < begin or done > end:
                    continue
                if status == 200 and check in answer:
                    latencies.append(done - sent)
                else:
                    errors += 1
                    first_error = first_error or (status, answer[:300])
        finally:
            conn.close()
        results[i] = (latencies, errors, first_error, conn.reconnects, late)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window["start"], window["begin"], window["end"] = now, now + warmup, now + warmup + duration
    start_barrier.wait()
    time.sleep(warmup)
    cpu_start = time.process_time()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu_start
    if any(r is None for r in results):
        raise RuntimeError("a load client thread failed (see the traceback above)")
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    first_error = next((r[2] for r in results if r[2]), None)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "first_error": repr(first_error) if first_error else None,
        "reconnects": sum(r[3] for r in results),
        "rate": rate,
        "late": sum(r[4] for r in results),
        "duration_s": duration,
        "rps": len(latencies) / duration,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        # Share of the whole machine the client burnt: the server had the rest.
        "client_cpu_share": cpu / (duration * os.cpu_count()),
    }


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def deploy(url, name, lang, source, **params):
    """Deploy through the HTTP API and return the answer (raises on anything but 201);
    `params` are more query parameters (reuse="true")."""
    query = "".join("&%s=%s" % kv for kv in params.items())
    req = urllib.request.Request("%s/deploy?name=%s&lang=%s%s" % (url, name, lang, query), data=source, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        if r.status != 201:
            raise RuntimeError("deploy %s answered %d" % (name, r.status))
        return json.load(r)


def wait_healthy(url, deadline_s=60.0, proc=None):
    """Poll GET /health until 200; False if the deadline passes or `proc` exits first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
