"""Defaults every process agrees on: socket paths, ports and the limits of the function contract."""

import os
from dataclasses import dataclass, replace

DEFAULT_LB_SOCK = "/tmp/faas_lb.sock"
DEFAULT_SERVER_SOCK = "/tmp/faas_server.sock"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_FUNCTIONS_DIR = "functions"
DEFAULT_WORKERS = 4

KIB = 1024
MIB = 1024 * KIB


def lb_sock(value=None):
    return value or os.environ.get("FAAS_LB_SOCK") or DEFAULT_LB_SOCK


def server_sock(value=None):
    return value or os.environ.get("FAAS_SERVER_SOCK") or DEFAULT_SERVER_SOCK


@dataclass(frozen=True)
class Limits:
    """The function contract's limits: defaults, and the ceilings a deploy may ask up to."""

    timeout_ms: int = 5000
    memory_mb: int = 128
    output_bytes: int = 1 * MIB
    code_bytes: int = 1 * MIB
    payload_bytes: int = 6 * MIB
    max_timeout_ms: int = 60_000
    max_memory_mb: int = 1024


LIMITS = Limits()


# -- each component's settings, built once from the command line (reference/cli.py) -----------

def _at_least(value, floor, flag):
    if value < floor:
        raise ValueError("%s must be at least %s, not %s" % (flag, floor, value))


@dataclass(frozen=True)
class BalancerSettings:
    lb_sock: str
    strategy: str = "RR"
    weights: tuple = None           # per-worker weights for WEIGHTED, in registration order


@dataclass(frozen=True)
class NatsSettings:
    """How a server or worker host reaches NATS (docs/NATS.md). The secrets come from the
    environment (FAAS_NATS_USER, FAAS_NATS_PASSWORD, FAAS_NATS_TOKEN) or the --nats-creds file,
    never from a command line."""
    url: str = "nats://127.0.0.1:4222"
    creds: str = None               # --nats-creds FILE
    ca: str = None                  # --nats-ca FILE: the CA of the servers' certificates (tls://)
    insecure: bool = False          # --nats-insecure: accept a server that lets anyone in
    replicas: int = None            # the jobs stream's; default: one per --nats URL, up to 3

    def __post_init__(self):
        if self.replicas is not None and not 1 <= self.replicas <= 5:
            raise ValueError("--nats-replicas must be 1 to 5, not %s" % self.replicas)


@dataclass(frozen=True)
class ServerSettings:
    server_sock: str
    lb_sock: str
    workers: int = DEFAULT_WORKERS
    max_queue: int = 1024           # invocations waiting at once before 429
    min_workers: int = None         # auto-scaling bounds; both default to `workers`
    max_workers: int = None
    scale_cooldown: float = 5.0     # a worker idle this long is retired (auto-scaling)
    executor: str = "local"         # local: pre-forked workers on pipes; nats: worker hosts
    nats_url: str = "nats://127.0.0.1:4222"
    nats: NatsSettings = None       # the connection's settings; default: nats_url, no more

    def __post_init__(self):
        if self.nats is None:
            object.__setattr__(self, "nats", NatsSettings(url=self.nats_url))
        _at_least(self.workers, 1, "--workers")
        _at_least(self.max_queue, 1, "--max-queue")
        if self.min_workers is None:
            object.__setattr__(self, "min_workers", min(self.workers, self.max_workers or self.workers))
        if self.max_workers is None:
            object.__setattr__(self, "max_workers", max(self.workers, self.min_workers))
        _at_least(self.min_workers, 1, "--min-workers")
        if not self.min_workers <= self.workers <= self.max_workers:
            raise ValueError("auto-scaling needs --min-workers <= --workers <= --max-workers, not %d, %d, %d"
                             % (self.min_workers, self.workers, self.max_workers))


@dataclass(frozen=True)
class GatewaySettings:
    server_sock: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    functions: str = DEFAULT_FUNCTIONS_DIR
    api_key: str = None             # from FAAS_API_KEY or --api-key; never passed on a command line
    http: str = "gevent"            # the HTTP server: gevent (ours) or waitress
    threads: int = 16               # waitress's threads
    max_connections: int = 10_000   # open connections at once (--max-connections)
    limits: Limits = LIMITS         # the contract's limits, with the operator's ceilings
    invoke_key: str = None          # from FAAS_INVOKE_KEY (or --invoke-key): /invoke, /run, /call need it
    public_names: tuple = ()        # --public-name: names the Host header may carry besides ours
    keep_answers_mb: int = 256      # --keep-answers-mb: answers kept for async and keyed calls

    def __post_init__(self):
        _at_least(self.port, 0, "--port")
        _at_least(self.threads, 1, "--threads")
        # A kept call holds room for its largest answer: output and stderr at the output limit.
        _at_least(self.keep_answers_mb, 2 * self.limits.output_bytes // MIB + 1, "--keep-answers-mb")
        _at_least(self.max_connections, 1, "--max-connections")


@dataclass(frozen=True)
class WorkerHostSettings:
    nats_url: str = "nats://127.0.0.1:4222"
    workers: int = DEFAULT_WORKERS
    host_id: str = None             # default: hostname and pid
    cache: str = None               # where fetched functions are kept (default: a temp dir)
    nats: NatsSettings = None       # the connection's settings; default: nats_url, no more

    def __post_init__(self):
        if self.nats is None:
            object.__setattr__(self, "nats", NatsSettings(url=self.nats_url))
        _at_least(self.workers, 1, "--workers")


def operator_limits(max_timeout_ms=None, max_memory_mb=None):
    """The contract's limits with the operator's ceilings; a default above a ceiling comes down to it."""
    limits = replace(LIMITS, max_timeout_ms=max_timeout_ms or LIMITS.max_timeout_ms,
                     max_memory_mb=max_memory_mb or LIMITS.max_memory_mb)
    return replace(limits, timeout_ms=min(limits.timeout_ms, limits.max_timeout_ms),
                   memory_mb=min(limits.memory_mb, limits.max_memory_mb))


@dataclass(frozen=True)
class UpSettings:
    """`minifaas up`: the three components' settings, and the log level each child is given."""
    balancer: BalancerSettings
    server: ServerSettings
    gateway: GatewaySettings
    log_level: str = "INFO"
