"""Issue 6's WSGI server choice: the gateway's bottle app under its own server (httptools, the
default: reference/gateway/http/server.py), waitress, cheroot, gunicorn (gthread), bjoern, granian and
gevent's pywsgi, each loaded by 16 keep-alive clients.

Two modes: `instant` (a stand-in answers every invocation at once: the HTTP layer alone) and
`stack` (a real ServerClient to a real server with 4 workers and a balancer, hello in C).
Servers that are not installed are skipped; they are not dependencies of Mini FaaS.
"""

import os
import signal
import subprocess
import sys
import tempfile

import keepalive
import pytest
from benchpaths import EXAMPLES, HERE, ROOT
from figures import record

from harness.run.stack import free_port

CANDIDATES = {"waitress": "waitress", "cheroot": "cheroot", "gunicorn": "gunicorn", "bjoern": "bjoern",
              "granian": "granian", "pywsgi": "gevent",
              "httptools": "httptools"}
CLIENTS = 16
SECONDS = 3.0
INPUT = b'{"input": "test data"}'


def start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=str(ROOT), start_new_session=True)


def stop(proc):
    """TERM the process group, wait, then KILL it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def backend(hello_wasm):
    """A real balancer and server (4 workers) on private sockets, and a functions tree."""
    with tempfile.TemporaryDirectory(prefix="minifaas-wsgi-") as tmp:
        lb, server = os.path.join(tmp, "lb.sock"), os.path.join(tmp, "server.sock")
        log = open(os.path.join(tmp, "backend.log"), "w+b")
        procs = [start([sys.executable, "-m", "reference", "balancer", "--lb-sock", lb], log),
                 start([sys.executable, "-m", "reference", "server", "--workers", "4",
                        "--lb-sock", lb, "--server-sock", server], log)]
        try:
            yield {"server_sock": server, "functions": os.path.join(tmp, "functions"), "deployed": False}
        finally:
            for proc in reversed(procs):
                stop(proc)
            log.close()


@pytest.mark.parametrize("server", list(CANDIDATES))
@pytest.mark.parametrize("mode", ["instant", "stack"])
def test_wsgi_server(benchmark, mode, server, backend, tmp_path):
    pytest.importorskip(CANDIDATES[server], reason="%s is not installed (pip install %s)" % (server, server))
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    if mode == "instant":
        functions, target = str(tmp_path / "functions"), ["--instant"]
    else:
        functions, target = backend["functions"], ["--server-sock", backend["server_sock"]]
    os.makedirs(functions, exist_ok=True)
    log_path = tmp_path / "server.log"
    with open(log_path, "w+b") as log:
        proc = start([sys.executable, str(HERE / "wsgi_serve.py"), server, str(port), functions] + target, log)
        try:
            if not keepalive.wait_healthy(url, 60, proc):
                pytest.fail("%s did not come up:\n%s" % (server, log_path.read_text(errors="replace")))
            if mode == "instant":
                keepalive.deploy(url, "hello", "python", (EXAMPLES / "greet.py").read_bytes())
            elif not backend["deployed"]:
                keepalive.deploy(url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())
                backend["deployed"] = True
            figures = benchmark.pedantic(keepalive.run, args=(url, "/invoke?fn=hello", INPUT, CLIENTS, SECONDS),
                                         rounds=1, iterations=1)
        finally:
            stop(proc)
    assert figures["errors"] == 0, figures["first_error"]
    assert figures["requests"] > 0
    benchmark.extra_info.update(figures)
    what = "the HTTP layer alone (instant stand-in)" if mode == "instant" else "real server + balancer, 4 workers, hello in C"
    record("WSGI servers, %d keep-alive clients, %.0f s: %s" % (CLIENTS, SECONDS, what), server,
           rps=round(figures["rps"], 1), p50_ms=figures["p50_ms"], p99_ms=figures["p99_ms"],
           client_cpu=round(figures["client_cpu_share"], 3), reconnects=figures["reconnects"])
