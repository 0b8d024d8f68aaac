"""The `minifaas` command line: one subcommand per process of the seed, plus `up`, `inject`, `bench`.

Each subcommand parses its arguments here, checks them, and hands the module that owns the
component one frozen settings object (reference/config.py), so a reader finds the whole command
line in one page and no component reads argparse namespaces.
"""

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from reference import config, remote
from reference.wire.errors import FaasError


def _sockets(p):
    p.add_argument("--lb-sock", default=None,
                   help="balancer socket (env FAAS_LB_SOCK, default %s)" % config.DEFAULT_LB_SOCK)
    p.add_argument("--server-sock", default=None,
                   help="server socket (env FAAS_SERVER_SOCK, default %s)" % config.DEFAULT_SERVER_SOCK)


def _balancer_args(p):
    p.add_argument("--strategy", default="RR", help="RR, FIFO, WEIGHTED, LEAST or WARM (default RR)")
    p.add_argument("--weights", default=None, help="per-worker weights for WEIGHTED, e.g. 1,1,2,2")


def _server_args(p):
    p.add_argument("--workers", type=int, default=config.DEFAULT_WORKERS,
                   help="worker processes to pre-fork (default %d)" % config.DEFAULT_WORKERS)
    p.add_argument("--max-queue", type=int, default=1024,
                   help="invocations waiting at once before answering 429 (default 1024)")
    p.add_argument("--min-workers", type=int, default=None,
                   help="auto-scaling: never fewer workers than this (default: --workers)")
    p.add_argument("--max-workers", type=int, default=None,
                   help="auto-scaling: add workers while jobs wait, up to this many (default: --workers)")
    p.add_argument("--scale-cooldown", type=float, default=5.0,
                   help="auto-scaling: retire a worker idle this many seconds (default 5)")
    p.add_argument("--executor", choices=("local", "nats"), default="local",
                   help="local: pre-forked workers on pipes (default); nats: worker hosts through NATS JetStream")
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL for --executor nats")
    _nats_args(p)


def _nats_args(p):
    """How to reach NATS; the secrets are not flags (docs/NATS.md)."""
    p.add_argument("--nats-creds", default=os.environ.get("FAAS_NATS_CREDS") or None, metavar="FILE",
                   help="NATS credentials: a .creds file, or FAAS_NATS_USER=/FAAS_NATS_PASSWORD= (or "
                        "FAAS_NATS_TOKEN=) lines, mode 600 (env FAAS_NATS_CREDS; else those variables "
                        "are read from the environment)")
    p.add_argument("--nats-ca", default=os.environ.get("FAAS_NATS_CA") or None, metavar="FILE",
                   help="CA certificate of the NATS servers, for tls:// URLs (env FAAS_NATS_CA)")
    p.add_argument("--nats-insecure", action="store_true", default=os.environ.get("FAAS_NATS_INSECURE") == "1",
                   help="connect to a NATS server that accepts anonymous clients (refused otherwise)")
    p.add_argument("--nats-replicas", type=int, default=None,
                   help="the jobs stream's replicas (default: one per --nats URL, up to 3); give "
                        "the server and every host the same")


def _isolation_arg(p):
    p.add_argument("--require-isolation", action="store_true",
                   help="refuse to start unless functions and compilers get the full sandbox "
                        "(bubblewrap, cgroups): without it the platform runs with what it has and says so")


def _gateway_args(p):
    p.add_argument("--host", default=config.DEFAULT_HOST,
                   help="address to listen on (default %s; 0.0.0.0 for every interface)" % config.DEFAULT_HOST)
    p.add_argument("--port", type=int, default=config.DEFAULT_PORT, help="HTTP port (default %d)" % config.DEFAULT_PORT)
    p.add_argument("--functions", default=config.DEFAULT_FUNCTIONS_DIR,
                   help="where deployed functions are stored (default ./functions)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' to deploy; prefer the environment "
                        "variable FAAS_API_KEY, which `ps` does not show")
    p.add_argument("--invoke-key", default=None,
                   help="require 'Authorization: Bearer KEY' (this key or the API key) to invoke "
                        "(/invoke, /run, /call); prefer the environment variable FAAS_INVOKE_KEY")
    p.add_argument("--public-name", action="append", default=[], metavar="NAME",
                   help="a name clients reach the gateway by (a proxy's, a DNS name); other Host "
                        "headers than these and the loopback names get 421 (repeat for several)")
    p.add_argument("--keep-answers-mb", type=int, default=256,
                   help="memory for the answers of async and keyed calls kept for GET /call/ID; "
                        "when full, new ones get 429 (default 256)")
    p.add_argument("--http", choices=("gevent", "waitress"), default="gevent",
                   help="the HTTP server: gevent (default: one thread, a greenlet per connection, "
                        "httptools' parser) or waitress (a thread pool); docs/PERFORMANCE.md compares them")
    p.add_argument("--threads", type=int, default=16, help="waitress's threads (default 16)")
    p.add_argument("--max-connections", type=int, default=10_000,
                   help="open connections at once; at the limit idle ones are closed to make room, "
                        "and a new one gets 503 only when none can be (default 10000)")
    p.add_argument("--max-timeout-ms", type=int, default=None,
                   help="the most a deploy may ask as timeout_ms (default %d)" % config.LIMITS.max_timeout_ms)
    p.add_argument("--max-memory-mb", type=int, default=None,
                   help="the most a deploy may ask as memory_mb (default %d)" % config.LIMITS.max_memory_mb)


# Each subcommand's owner, imported only when that command runs: a component starts without
# loading the others (nor the harness's matplotlib).
COMMANDS = {
    "up": ("reference.server.supervisor", "up"),
    "balancer": ("reference.scheduling.balancer", "serve"),
    "server": ("reference.server.server", "serve"),
    "gateway": ("reference.gateway.serve", "serve"),
    "worker-host": ("reference.executors.nats.host", "serve"),
    "languages": ("reference.functions.toolchains", "cli"),
    "inject": ("harness.load.injector", "cli"),
    "bench": ("harness.bench", "cli"),
    "simulate": ("harness.simulate", "cli"),
    **{name: ("reference.remote", "cli") for name in remote.COMMANDS},
}


def _version():
    try:
        from importlib.metadata import version
        return version("minifaas")
    except Exception:       # running from a checkout that was never installed
        return "unknown (not installed)"


class _SubParsers(argparse._SubParsersAction):
    """Every subcommand's help line is also its --help page's description, and every
    subcommand takes --log-level too (`minifaas up --log-level DEBUG`)."""

    def add_parser(self, name, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        p = super().add_parser(name, **kwargs)
        p.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING (default INFO)")
        return p


def build_parser(argv=()):
    parser = argparse.ArgumentParser(prog="minifaas", description="Mini FaaS: a small Function-as-a-Service platform")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--version", action="version", version="minifaas %s" % _version())
    parser.register("action", "parsers", _SubParsers)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="balancer, server (+ workers) and gateway in one foreground command")
    _sockets(p); _balancer_args(p); _server_args(p); _gateway_args(p); _isolation_arg(p)

    p = sub.add_parser("balancer", help="the load balancer alone")
    _sockets(p); _balancer_args(p)

    p = sub.add_parser("server", help="the server and its pre-forked workers")
    _sockets(p); _server_args(p); _isolation_arg(p)

    p = sub.add_parser("gateway", help="the HTTP gateway")
    _sockets(p); _gateway_args(p); _isolation_arg(p)

    p = sub.add_parser("worker-host", help="pre-forked workers on this machine taking jobs from NATS")
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL")
    _nats_args(p)
    _isolation_arg(p)
    p.add_argument("--workers", type=int, default=config.DEFAULT_WORKERS,
                   help="worker processes on this host (default %d)" % config.DEFAULT_WORKERS)
    p.add_argument("--host-id", default=None, help="this host's name (default: hostname and pid)")
    p.add_argument("--cache", default=None, help="where fetched functions are cached (default: a temp dir)")

    p = sub.add_parser("languages", help="each language with the toolchain found, or what is missing")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # The harness's arguments are added only when asked for: importing it (matplotlib) would
    # cost every component a second of start-up.
    p = sub.add_parser("inject", help="the seed's load injector: THREADS x REQS invocations of FN")
    if "inject" in argv:
        from harness.load import injector
        injector.add_arguments(p)

    remote.add_arguments(sub)   # deploy, invoke, list, get, logs, delete, versions, rollback: the HTTP API's client

    p = sub.add_parser("bench", help="run scenarios against fresh stacks and write reports")
    if "bench" in argv:
        from harness import bench
        bench.add_arguments(p)

    p = sub.add_parser("simulate", help="a scenario through the queueing model: the real strategies, "
                                        "any number of workers, no stack")
    if "simulate" in argv:
        from harness import simulate
        simulate.add_arguments(p)
    return parser


# -- from arguments to each component's settings -----------------------------------------------

def balancer_settings(args):
    from reference.scheduling import strategies
    from reference.scheduling.balancer import parse_weights

    weights = parse_weights(args.weights)
    strategies.create(args.strategy, weights)   # an unknown name is refused before anything starts
    return config.BalancerSettings(lb_sock=config.lb_sock(args.lb_sock), strategy=args.strategy.upper(),
                                   weights=tuple(weights) if weights else None)


def server_settings(args):
    return config.ServerSettings(
        server_sock=config.server_sock(args.server_sock), lb_sock=config.lb_sock(args.lb_sock),
        workers=args.workers, max_queue=args.max_queue, min_workers=args.min_workers,
        max_workers=args.max_workers, scale_cooldown=args.scale_cooldown, executor=args.executor,
        nats_url=args.nats, nats=_nats_settings(args))


def _nats_settings(args):
    return config.NatsSettings(url=args.nats, creds=args.nats_creds, ca=args.nats_ca,
                               insecure=args.nats_insecure, replicas=args.nats_replicas)


def gateway_settings(args):
    from reference.gateway.checks import public_name

    for name in args.public_name:
        public_name(name)   # a name the Host check could never match is refused here
    return config.GatewaySettings(
        server_sock=config.server_sock(args.server_sock), host=args.host, port=args.port,
        functions=args.functions, api_key=args.api_key or os.environ.get("FAAS_API_KEY") or None,
        http=args.http, threads=args.threads, max_connections=args.max_connections,
        limits=config.operator_limits(args.max_timeout_ms, args.max_memory_mb),
        invoke_key=args.invoke_key or os.environ.get("FAAS_INVOKE_KEY") or None,
        public_names=tuple(args.public_name), keep_answers_mb=args.keep_answers_mb)


def worker_host_settings(args):
    return config.WorkerHostSettings(nats_url=args.nats, workers=args.workers, host_id=args.host_id,
                                     cache=args.cache, nats=_nats_settings(args))


def up_settings(args):
    balancer = balancer_settings(args)
    if balancer.weights and len(balancer.weights) != args.workers:
        raise ValueError("--weights gives %d weights for %d workers: give one per worker"
                         % (len(balancer.weights), args.workers))
    return config.UpSettings(balancer, server_settings(args), gateway_settings(args), args.log_level)


# What each command hands its owner; the harness's commands and `languages` take the namespace.
SETTINGS = {
    "up": up_settings,
    "balancer": balancer_settings,
    "server": server_settings,
    "gateway": gateway_settings,
    "worker-host": worker_host_settings,
}


def _needs_nats(command, settings):
    server = settings.server if command == "up" else settings if command == "server" else None
    return command == "worker-host" or (server is not None and server.executor == "nats")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        settings = SETTINGS[args.command](args) if args.command in SETTINGS else args
    except (ValueError, FaasError) as exc:
        parser.error(getattr(exc, "message", None) or str(exc))   # exit 2, before anything starts
    if _needs_nats(args.command, settings) and importlib.util.find_spec("nats") is None:
        parser.error("%s through NATS needs the nats-py package: pip install 'minifaas[nats]'" % args.command)
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
                        stream=sys.stderr)
    module, function = COMMANDS[args.command]
    if args.command == "gateway" and settings.http == "gevent":
        # Before the gateway's modules are imported, so that their sockets, locks and threads
        # are gevent's: a blocking wait for the server then yields to the other connections.
        from gevent import monkey
        monkey.patch_all()
    if hasattr(args, "require_isolation"):
        check_isolation(args.require_isolation)
    return getattr(importlib.import_module(module), function)(settings)


def check_isolation(required):
    """Before a component that runs functions or compilers starts: refuse (--require-isolation)
    or warn loudly when the machine cannot give them the full sandbox. `up` checks once for its
    three children."""
    if os.environ.get("FAAS_ISOLATION_CHECKED") == "1":
        return
    from reference.worker.sandbox import isolation

    if required:
        isolation.require()         # SystemExit naming what is missing and how to install it
    else:
        isolation.warn_if_weak()
    os.environ["FAAS_ISOLATION_CHECKED"] = "1"     # inherited by the children of `up`
