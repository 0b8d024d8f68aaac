"""The gateway's bottle app under a chosen WSGI server, for the WSGI comparison of issue 6.

    python wsgi_serve.py SERVER PORT FUNCTIONS_DIR (--server-sock PATH | --instant)

SERVER is waitress, cheroot, gunicorn, bjoern, granian, pywsgi (gevent's) or httptools (the
gateway's own, reference/gateway/http/server.py), each with 16 threads where it has
threads. --instant replaces the server connection with a stand-in that answers at once, which
isolates the HTTP layer; --server-sock talks to a real `minifaas server`.
"""

import argparse
import os
import sys

THREADS = 16


class InstantClient:
    """Stands in for ServerClient: every invocation succeeds at once, as hello would answer."""

    def invoke(self, meta, payload, limits=None):
        from reference.wire.jobs import Outcome
        return Outcome(stdout=b"Hello from FAAS!\n" + payload, worker=0)

    def stats(self):
        return {"strategy": "instant", "queue": 0, "workers": [], "balancer": True}

    def health(self):
        return {"server": True, "balancer": True, "workers": 1, "size": 1}

    def close(self):
        pass


def app_from_env():
    """The app as configured by FAAS_BENCH_FUNCTIONS and FAAS_BENCH_SERVER_SOCK (empty: instant).
    A factory, because gunicorn and granian build the app in their own worker processes."""
    from reference.functions.storage import Storage
    from reference.gateway.app import make_app
    from reference.gateway.client import ServerClient

    sock = os.environ.get("FAAS_BENCH_SERVER_SOCK")
    client = ServerClient(sock) if sock else InstantClient()
    return make_app(Storage(os.environ["FAAS_BENCH_FUNCTIONS"]), client)


def serve_waitress(port):
    from waitress.server import create_server
    create_server(app_from_env(), host="127.0.0.1", port=port, threads=THREADS).run()


def serve_cheroot(port):
    from cheroot import wsgi
    server = wsgi.Server(("127.0.0.1", port), app_from_env(), numthreads=THREADS)
    # Its default keeps at most 10 idle keep-alive connections and closes the rest.
    server.keep_alive_conn_limit = 4 * THREADS
    server.start()


def serve_gunicorn(port):
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):
        def load_config(self):
            for key, value in {"bind": "127.0.0.1:%d" % port, "workers": 1, "worker_class": "gthread",
                               "threads": THREADS, "keepalive": 75, "loglevel": "warning"}.items():
                self.cfg.set(key, value)

        def load(self):
            return app_from_env()

    Application().run()


def serve_bjoern(port):
    import bjoern
    bjoern.run(app_from_env(), "127.0.0.1", port)


def serve_pywsgi(port):
    # Greenlets instead of threads: the blocking ServerClient yields to the hub, not to the OS.
    from gevent import monkey
    monkey.patch_all()
    import socket

    from gevent.pywsgi import WSGIServer

    class NoDelay(WSGIServer):
        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body go out apart
            super().handle(sock, address)

    NoDelay(("127.0.0.1", port), app_from_env(), log=None).serve_forever()


def serve_httptools(port):
    # The gateway's default: reference/gateway/http/server.py (gevent greenlets, httptools' parser).
    from gevent import monkey
    monkey.patch_all()
    from reference.gateway.http.server import HTTPServer
    HTTPServer(("127.0.0.1", port), app_from_env(), max_body=7 << 20).serve_forever()


def serve_granian(port):
    from granian import Granian
    from granian.constants import Interfaces
    Granian("wsgi_serve:app_from_env", address="127.0.0.1", port=port, interface=Interfaces.WSGI,
            workers=1, blocking_threads=THREADS, factory=True, log_level="warning").serve()


SERVERS = {"waitress": serve_waitress, "cheroot": serve_cheroot, "gunicorn": serve_gunicorn,
           "bjoern": serve_bjoern, "granian": serve_granian, "pywsgi": serve_pywsgi,
           "httptools": serve_httptools}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=SERVERS)
    parser.add_argument("port", type=int)
    parser.add_argument("functions")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--server-sock")
    mode.add_argument("--instant", action="store_true")
    args = parser.parse_args()
    os.environ["FAAS_BENCH_FUNCTIONS"] = args.functions
    os.environ["FAAS_BENCH_SERVER_SOCK"] = args.server_sock or ""
    # granian imports this module by name in its worker: it must be on the path there too.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, here)
    SERVERS[args.server](args.port)


if __name__ == "__main__":
    main()
