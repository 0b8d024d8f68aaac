"""`minifaas gateway`: the gateway's WSGI app (reference/gateway/app.py) under an HTTP server,
ours (gevent greenlets and httptools, reference/gateway/http/server.py) or waitress, until
SIGTERM or SIGINT."""

import errno
import logging
import os
import resource
import signal

from reference import config
from reference.functions.storage import Storage
from reference.gateway.app import app_options, make_app

log = logging.getLogger(__name__)

EXIT_CANNOT_LISTEN = 2     # like a usage error: `minifaas up` does not restart it


def serve(settings):
    """`minifaas gateway`: the app under the chosen WSGI server until SIGTERM or SIGINT. Returns
    the exit code."""
    from reference.gateway.client import ServerClient

    storage = Storage(settings.functions, settings.limits)
    # ServerClient connects on first use and reconnects after a loss, so the gateway may start
    # before the server and answers 503 'server unavailable' until it is there.
    client = ServerClient(settings.server_sock, settings.limits)
    run = HTTP_SERVERS[settings.http]
    try:
        run(settings, lambda **seams: make_app(storage, client, **app_options(settings), **seams))
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        # Not worth a traceback, nor a restart: the same port fails the same way.
        log.error("cannot listen on %s:%d: %s (choose another --port or stop what holds it)",
                  settings.host, settings.port, exc.strerror)
        return EXIT_CANNOT_LISTEN
    finally:
        client.close()
    log.info("stopped")
    return 0


def _serve_gevent(settings, build_app):
    """One thread, a greenlet per connection, requests parsed by httptools (reference/gateway/http/server.py).
    The process was monkey-patched before the gateway was imported (reference/cli.py), so waiting
    for the server costs a greenlet switch, not a thread handoff under the GIL: the cheapest
    server measured on this path (docs/PERFORMANCE.md)."""
    import gevent
    from gevent.event import Event

    from reference.gateway.http.server import HTTPServer
    from reference.worker.wasm import engine as wasm

    def precompile(module):
        # wasmtime compiles in C without yielding: in a real thread, the loop keeps serving.
        return gevent.get_hub().threadpool.apply(wasm.precompile, (module,))

    app = build_app(precompile=precompile)
    _raise_open_files(settings.max_connections)
    # Bodies up to 1 MiB past our own limits reach the app, which answers them with its JSON 413.
    # FAAS_GATEWAY_FAST=0: every request through bottle, POST /invoke too (reference/gateway/fast.py).
    fast = app.fast if os.environ.get("FAAS_GATEWAY_FAST", "1") != "0" else None
    server = HTTPServer((settings.host, settings.port), app, max_body=settings.limits.payload_bytes + config.MIB,
                        max_connections=settings.max_connections, fast=fast, backlog=1024)
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    server.start()
    log.info("listening on http://%s:%s (gevent)", settings.host, server.server_port)
    try:
        stopping.wait()
    finally:
        server.stop(timeout=5)
        app.calls.close()


def _serve_waitress(settings, build_app):
    """A thread pool of --threads threads over waitress's own asyncore loop."""
    from waitress.server import create_server

    app = build_app()
    _raise_open_files(settings.max_connections)
    server = create_server(
        app, host=settings.host, port=settings.port, threads=settings.threads, ident="minifaas",
        # Above our own limits, so bodies up to there get our JSON 413 rather than waitress's.
        max_request_body_size=settings.limits.payload_bytes + config.MIB,
        # poll(), not select(): select cannot watch a descriptor numbered past 1,023.
        connection_limit=settings.max_connections, asyncore_use_poll=True, backlog=1024,
    )
    # Waitress's task-queue warnings are expected under a load test; keep the log for real trouble.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    def stop(signum, frame):
        # waitress's run() turns SystemExit into a clean shutdown of its loop and threads.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on http://%s:%s (waitress)", server.effective_host, server.effective_port)
    try:
        server.run()
    finally:
        server.close()
        app.calls.close()


def _raise_open_files(connections):
    """Room for `connections` sockets and the gateway's own files: the soft limit of open files
    raised toward the hard one (often 1,024 by default, which a few slow clients would fill)."""
    want = connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < want:
            log.warning("open files limited to %d: fewer than --max-connections %d can be open",
                        target, connections)


HTTP_SERVERS = {"gevent": _serve_gevent, "waitress": _serve_waitress}
