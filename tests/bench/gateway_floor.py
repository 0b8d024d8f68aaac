"""What the event loop costs the gateway: the real gateway and three stripped-down ones, each
in front of the same real server, balancer and workers, under bench_e2e's 16-client hello load,
in turn. Prints each one's CPU per request (from /proc) and rate.

    python tests/bench/gateway_floor.py [SECONDS] [ROUNDS]

The stripped-down gateways answer only `POST /invoke?fn=NAME` and keep none of the gateway's
bookkeeping (no Calls, records, metrics, admission, Host or key checks, no deadlines):

    gevent    the gateway's own HTTP server (reference/gateway/http/server.py, limits and all)
              and its ServerClient, with a handler that goes straight to the client
    hub       gevent, with no HTTP server of ours: each connection read by a watcher in the
              hub and handed to its greenlet, the client a watcher and Waiters too; nothing
              else, not even a limit
    uvloop    no greenlets: asyncio protocols on uvloop, httptools callbacks, one connection
              to the server whose read callback writes each answer (uvicorn's shape)

So `real - gevent` is the gateway's bookkeeping; `gevent - hub`, our server's and client's
code on gevent; `hub - uvloop`, the rest of what greenlets cost against callbacks. None of the
three is a gateway (they would fail every hostile-client test): they are floors, for deciding
where a rewrite would pay. Read the figures as this host's, under this load only; compare
within one run (docs/PERFORMANCE.md, "A ninth look").
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(CHECKOUT, "tests"), CHECKOUT]

KINDS = ("gevent", "hub", "uvloop")


def _invoke_frame(storage, query, limits):
    """The server's invoke frame header for `?fn=NAME`, as ServerClient.invoke builds it."""
    from reference.wire import ops

    meta = storage.get(query[3:].decode())
    return ops.invoke(meta["id"], meta["dir"], meta["lang"], int(meta.get("timeout_ms") or limits.timeout_ms),
                      int(meta.get("memory_mb") or limits.memory_mb), limits.output_bytes)


def _body(outcome):
    """A JSON body much like the gateway's."""
    return json.dumps({"ok": True, "output": outcome.stdout.decode("utf-8", "replace"),
                       "exec_ms": outcome.exec_ms}).encode()


def _answer(outcome):
    """The whole 200 with `_body`, for the gateways that write their own bytes."""
    data = _body(outcome)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


def serve_gevent(port, sock, storage, limits):
    from reference.gateway import parse
    from reference.gateway.client import ServerClient
    from reference.gateway.http.server import HTTPServer
    from reference.wire.jobs import Outcome

    client = ServerClient(sock, limits)

    def fast(method, path, query, headers, body):
        header, payload = _invoke_frame(storage, query, limits), parse.decode_input(body)
        data = _body(Outcome.from_wire(*client.call(header, payload, 60.0)))
        return "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))], data

    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]

    server = HTTPServer(("127.0.0.1", port), app, max_body=1 << 20, fast=fast, backlog=1024)
    server.start()


def serve_hub(port, sock, storage, limits):
    import collections
    import itertools
    import socket

    import gevent
    import httptools
    from gevent.hub import Waiter, get_hub

    from reference.gateway import parse
    from reference.wire import framing
    from reference.wire.jobs import Outcome

    loop, awaited, ids = get_hub().loop, {}, itertools.count(1)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.connect(sock)
    sink = framing.FrameSink(lambda header, body: awaited.pop(header["req"]).switch((header, body)))

    def answers():
        while True:
            try:
                n = os.readv(upstream.fileno(), [sink.space()])
            except BlockingIOError:
                return
            sink.filled(n)

    loop.io(upstream.fileno(), 1).start(answers)

    class Connection:
        def __init__(self, conn):
            self.conn, self.fd, self.ready, self.waiter = conn, conn.fileno(), collections.deque(), None
            self.parser, self.url, self.body = httptools.HttpRequestParser(self), b"", []
            self.watcher = loop.io(self.fd, 1)
            self.watcher.start(self.readable)
            gevent.spawn(self.serve)

        def on_url(self, url):
            self.url = url

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            self.ready.append((self.url, b"".join(self.body)))
            self.body = []

        def readable(self):
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if data:
                self.parser.feed_data(data)
            else:
                self.watcher.stop()
                self.ready.append(None)
            if self.ready and self.waiter is not None:
                waiter, self.waiter = self.waiter, None
                waiter.switch(None)

        def serve(self):
            while True:
                if not self.ready:
                    self.waiter = Waiter()
                    self.waiter.get()
                request = self.ready.popleft()
                if request is None:
                    self.watcher.close()
                    self.conn.close()
                    return
                query = httptools.parse_url(request[0]).query
                req, waiter = next(ids), Waiter()
                awaited[req] = waiter
                upstream.sendall(framing.encode(dict(_invoke_frame(storage, query, limits), req=req),
                                                parse.decode_input(request[1])))
                self.conn.sendall(_answer(Outcome.from_wire(*waiter.get())))

    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def accept():
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Connection(conn)

    gevent.spawn(accept)


def serve_uvloop(port, sock, storage, limits):
    import asyncio
    import itertools

    import httptools
    import uvloop

    from reference.gateway import parse
    from reference.wire import framing
    from reference.wire.jobs import Outcome

    awaited, ids, upstream = {}, itertools.count(1), []

    class Answers(framing.SinkProtocol):
        def frame(self, header, body):
            awaited.pop(header["req"]).transport.write(_answer(Outcome.from_wire(header, body)))

    class HTTP(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.parser, self.url, self.body = transport, httptools.HttpRequestParser(self), b"", []

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_url(self, url):
            self.url = url

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            req = next(ids)
            awaited[req] = self
            header = dict(_invoke_frame(storage, httptools.parse_url(self.url).query, limits), req=req)
            upstream[0].transport.write(framing.encode(header, parse.decode_input(b"".join(self.body))))
            self.body = []

    async def main():
        loop = asyncio.get_running_loop()
        upstream.append((await loop.create_unix_connection(Answers, sock))[1])
        server = await loop.create_server(HTTP, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def serve(kind, port, sock, functions):
    if kind != "uvloop":
        from gevent import monkey
        monkey.patch_all()
    from reference import config
    from reference.functions.storage import Storage

    storage = Storage(functions, config.LIMITS)
    globals()["serve_" + kind](port, sock, storage, config.LIMITS)
    if kind != "uvloop":
        import gevent
        print("ready", flush=True)
        gevent.wait()


def _cpu(pid):
    """The process's CPU so far, in seconds (gateway_alone's reading of /proc)."""
    from gateway_alone import _cpu as ticks
    return sum(ticks(pid)) / os.sysconf("SC_CLK_TCK")


def main(argv):
    import keepalive
    from bench_e2e import CLIENTS, INPUT
    from benchpaths import EXAMPLES

    from harness.run.stack import Stack
    from reference.ports import free_port

    seconds = float(argv[0]) if argv else 4.0
    rounds = int(argv[1]) if len(argv) > 1 else 3
    started = []
    with Stack(strategy="RR", workers=4) as stack:
        try:
            keepalive.deploy(stack.url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())
            gateway = next(int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                           and b"gateway" in _argv(pid) and os.getpgid(int(pid)) == stack.proc.pid)
            who = {"real": (stack.url, gateway)}
            for kind in KINDS:
                port = free_port()
                proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind, str(port),
                                         stack.server_sock, stack.functions_dir],
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
                started.append(proc)
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("the %s gateway did not start" % kind)
                who[kind] = ("http://127.0.0.1:%d" % port, proc.pid)
            for url, _ in who.values():
                keepalive.run(url, "/invoke?fn=hello", INPUT, CLIENTS, 1.0)      # warm
            figures = {kind: [] for kind in who}
            for _ in range(rounds):
                for kind, (url, pid) in who.items():
                    before = _cpu(pid)
                    run = keepalive.run(url, "/invoke?fn=hello", INPUT, CLIENTS, seconds)
                    if run["errors"]:
                        raise RuntimeError("%s: %d requests failed, the first: %s"
                                           % (kind, run["errors"], run["first_error"]))
                    figures[kind].append(((_cpu(pid) - before) / run["requests"] * 1e6, run["rps"]))
            for kind, runs in figures.items():
                print("%-7s gateway %s us a request   %s req/s" % (
                    kind, " / ".join("%.0f" % cpu for cpu, _ in runs), " / ".join("%.0f" % rps for _, rps in runs)))
        finally:
            for proc in started:
                os.killpg(proc.pid, 9)
                proc.wait()


def _argv(pid):
    try:
        return open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        return []


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main(sys.argv[1:])
