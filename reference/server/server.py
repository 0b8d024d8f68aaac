"""The server process: takes invocations from gateways, asks the balancer which worker runs
each one, runs it on that worker and answers with the Outcome.

One asyncio loop owns everything: the gateway connections (many invocations in flight on
each), the persistent link to the balancer (reference/server/balancer_link.py), the executor
that runs the jobs (reference/executors/) and, when the pool may grow and shrink, the
autoscaler (reference/server/autoscaler.py). Nothing on the request path sleeps or polls.

An invocation's way through: `op_invoke` admits it (or answers at once: 429, 503) and
`submit`s it to the balancer; the balancer's `assign` reaches `assigned`, which hands the job
to the executor; the executor's future settles it, and `answer_of` turns what it holds into
the answer frame. A job the balancer holds when the link drops is answered 503.
"""

import asyncio
import itertools
import logging
import os
import signal
import socket
import time

from reference.executors import Executor
from reference.executors.local import LocalWorkers
from reference.server.autoscaler import Autoscaler
from reference.server.balancer_link import BalancerLink
from reference.wire import framing, ops
from reference.wire.errors import FaasError, Overloaded, ProtocolError, Unavailable
from reference.wire.jobs import Job
from reference.worker.sandbox import scratch

log = logging.getLogger(__name__)

# Could not start (its socket in use, the executor refused, e.g. NATS credentials): a restart
# cannot help, and `minifaas up` does not try (reference/server/supervisor.py).
EXIT_REFUSED = 2

STATS_TIMEOUT_S = 1.0


class Invocation:
    """An invocation between its arrival and its answer."""

    __slots__ = ("job", "reply", "arrived", "worker")

    def __init__(self, job, reply):
        self.job, self.reply, self.arrived, self.worker = job, reply, time.monotonic(), None


def make_executor(settings, on_up, on_down, on_broken):
    """The executor the settings name, and the same executor again as the Scalable to
    auto-scale, or None when its pool has a fixed size."""
    if settings.executor == "nats":
        from reference.executors.nats.executor import NatsWorkers, balancer_strategy

        if settings.max_workers > settings.min_workers:
            log.warning("--min-workers/--max-workers are ignored with --executor nats: "
                        "worker hosts bring their own workers")
        # The strategy is the balancer's option: NatsWorkers asks the balancer for it (FIFO
        # means a shared work queue in NATS rather than each host's own subject).
        return NatsWorkers(settings.nats_url, on_up=on_up, on_down=on_down, nats=settings.nats,
                           strategy=lambda: balancer_strategy(settings.lb_sock)), None
    pool = LocalWorkers(settings.workers, on_up=on_up, on_down=on_down, on_broken=on_broken,
                        min_size=settings.min_workers, max_size=settings.max_workers)
    return pool, (pool if pool.max_size > pool.min_size else None)


def answer_of(result, queue_ms):
    """The frame (header, body) that answers an invocation, from what the executor's future
    held: an Outcome, or the exception that stopped the job (a FaasError keeps its kind, any
    other is the executor's failure: 503). The one place where a failure becomes an answer."""
    if isinstance(result, FaasError):
        return result.to_wire(), b""
    if isinstance(result, BaseException):
        return Unavailable("the executor failed: %s" % (result or type(result).__name__)).to_wire(), b""
    header, body = result.to_wire()
    header["queue_ms"] = round(queue_ms, 3)
    return header, body


def result_of(future):
    """What a settled future holds: its result, or its exception (cancelled is one too)."""
    if future.cancelled():
        return Unavailable("the job was cancelled")
    return future.exception() or future.result()


class GatewayConnection(framing.SinkProtocol):
    """One gateway's connection: its frames are read straight into a FrameSink and dispatched
    from the read callback itself (no stream, no task woken per frame); answers go out on the
    transport."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    def connection_made(self, transport):
        super().connection_made(transport)
        log.info("gateway connected")

    def frame(self, header, body):
        self.server.dispatch(header, body, self.transport)

    def broken(self, exc):
        log.error("closing a gateway connection: %s", exc)
        self.transport.close()

    def ended(self, inside_frame):
        if inside_frame:
            log.error("closing a gateway connection: connection closed inside a frame")

    def connection_lost(self, exc):
        log.info("gateway disconnected")


class Server:
    """Gateway connections on one side, the balancer link and the executor on the other.

    Gateway requests are dispatched by op to `op_<name>(header, body, reply)`; the link calls
    back `balancer_up`, `assigned`, `rejected` and `balancer_lost`; the executor calls back
    `worker_up`, `worker_down` and `pool_broken`."""

    def __init__(self, settings, executor_factory=make_executor):
        self.server_sock = settings.server_sock
        self.max_queue = settings.max_queue
        pool, scalable = executor_factory(settings, self.worker_up, self.worker_down, self.pool_broken)
        self.pool: Executor = pool
        self.scaler = Autoscaler(scalable, lambda: len(self.unassigned), settings.scale_cooldown) if scalable else None
        self.link = BalancerLink(settings.lb_sock, self)
        self.in_flight = {}          # job id -> Invocation, from arrival to answer
        self.unassigned = set()      # job ids submitted to the balancer and not yet assigned
        self.broken = None           # why no worker can start, once the executor said so
        self.job_ids = itertools.count(1)
        self.tasks = set()           # per-request tasks (stats), kept until they end
        self.stopping = asyncio.Event()

    # -- gateway side --------------------------------------------------------------------

    def dispatch(self, header, body, writer):
        """Call the request's `op_<name>` with a `reply(header, body=b"")` that answers it on
        `writer` (the connection's transport)."""
        op, req = header.get("op"), header.get("req")

        def reply(answer, payload=b""):
            answer["req"] = req
            if not writer.is_closing():
                writer.write(framing.encode(answer, payload))

        handler = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
        if handler is None:
            return reply(ProtocolError("unknown op %r" % (op,)).to_wire())
        handler(header, body, reply)

    def op_invoke(self, header, body, reply):
        refusal = self.refusal()
        if refusal is not None:
            return reply(refusal.to_wire())
        try:
            job = Job.from_wire(dict(header, job_id=next(self.job_ids)), body)
        except (KeyError, TypeError) as exc:
            return reply(ProtocolError("malformed invoke: %s" % exc).to_wire())
        self.in_flight[job.job_id] = Invocation(job, reply)
        self.submit(job)

    def op_health(self, header, body, reply):
        reply(self.health())

    def op_stats(self, header, body, reply):
        # The balancer's part takes a round trip: a task, kept until it ends.
        task = asyncio.get_running_loop().create_task(self.stats(reply))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def refusal(self):
        """Why a new invocation cannot be taken now (a FaasError), or None."""
        if len(self.in_flight) >= self.max_queue:
            return Overloaded("the platform is overloaded (%d invocations waiting); retry later"
                              % len(self.in_flight), retry_after=1)
        # Workers that cannot boot first: that is for good (no more are started), where a
        # balancer that is away comes back by itself.
        if self.broken and not self.pool.alive():
            return Unavailable("no worker available: %s" % self.broken)
        if not self.link.connected:
            return Unavailable("balancer unavailable: no load balancer is connected to the server")
        if not self.pool.alive():
            return Unavailable("no worker available: %s" % self.broken if self.broken else "no worker available")
        return None

    def health(self):
        answer = {"server": True, "balancer": self.link.connected, "workers": len(self.pool.alive()),
                  "size": self.pool.size}
        if self.broken:
            answer["broken"] = self.broken
        return answer

    async def stats(self, reply):
        answer = {"workers": self.pool.snapshot(), "balancer": self.link.connected,
                  "pending": len(self.in_flight)}
        lb = await self.link.stats(STATS_TIMEOUT_S)
        if lb is None:
            return reply(Unavailable("balancer unavailable").to_wire())
        answer.update(strategy=lb.get("strategy"), balancer_workers=lb.get("workers"),
                      queue=lb.get("queue", 0) + sum(w.get("queue", 0) for w in answer["workers"]))
        reply(answer)

    # -- the job flow ----------------------------------------------------------------------

    def submit(self, job):
        self.unassigned.add(job.job_id)
        if not self.link.send(ops.submit(job.job_id, job.fn_id)):
            self.answer(job.job_id, Unavailable("balancer unavailable").to_wire())

    def answer(self, job_id, header, body=b""):
        invocation = self.in_flight.pop(job_id, None)
        self.unassigned.discard(job_id)
        if invocation is not None:
            invocation.reply(header, body)

    def settle(self, job_id, wid, future):
        """The executor is done with the job: free the balancer's slot, answer the call."""
        self.link.send(ops.done(job_id, wid))
        invocation = self.in_flight.get(job_id)
        if invocation is not None:
            started = invocation.job.started or time.monotonic()
            self.answer(job_id, *answer_of(result_of(future), (started - invocation.arrived) * 1000))

    # -- the balancer's side (called by BalancerLink) --------------------------------------

    def balancer_up(self):
        alive = self.pool.alive()
        if alive:
            self.link.send(ops.register(alive))

    def assigned(self, job_id, wid):
        invocation = self.in_flight.get(job_id)
        self.unassigned.discard(job_id)
        if invocation is None:
            self.link.send(ops.done(job_id, wid))  # answered meanwhile: free the worker's slot
            return
        if wid not in self.pool.alive():
            return self.submit(invocation.job)  # assigned to a worker that just died: schedule again
        invocation.worker = wid
        future = self.pool.submit(wid, invocation.job)
        future.add_done_callback(lambda f: self.settle(job_id, wid, f))

    def rejected(self, job_id, message):
        self.answer(job_id, Unavailable(message).to_wire())

    def balancer_lost(self):
        for job_id in list(self.unassigned):
            self.answer(job_id, Unavailable(
                "balancer unavailable: it went away before scheduling the call").to_wire())

    # -- the executor's side -----------------------------------------------------------------

    def worker_up(self, wid):
        self.link.send(ops.register([wid]))

    def worker_down(self, wid, orphans):
        self.link.send(ops.unregister([wid]))
        for job, future in orphans:
            # Nothing of these ran: they are retried on whichever worker the balancer names.
            if job.job_id in self.in_flight and not future.done():
                self.submit(job)
            else:
                self.answer(job.job_id, Unavailable("no worker available: the worker went away").to_wire())

    def pool_broken(self, reason):
        """The executor cannot start workers (one could not boot): say why, keep answering."""
        self.broken = reason
        log.error("no more workers will be started: %s", reason)

    # -- life cycle ----------------------------------------------------------------------

    def _signalled(self):
        self.pool.closing()     # the workers may have had the same signal: none is replaced
        self.stopping.set()

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled)
        # The stack's own scratch root, inherited by the workers forked next (FAAS_SCRATCH_ROOT).
        scratch_root = scratch.make_stack_root()
        try:
            await self.pool.start()  # fork before any other task runs: the children start from a quiet process
        except BaseException:
            scratch.remove_stack_root(scratch_root)
            raise
        remove_stale_socket(self.server_sock)
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            listener = await loop.create_unix_server(lambda: GatewayConnection(self), self.server_sock)
        finally:
            os.umask(old_umask)
        log.info("server listening on %s with %d workers", self.server_sock, self.pool.size)
        try:
            async with asyncio.TaskGroup() as tasks:
                # Each runs until cancelled; a failure in one cancels the rest and stops the server.
                running = [tasks.create_task(self.link.run())]
                if self.scaler is not None:
                    running.append(tasks.create_task(self.scaler.run()))
                await self.stopping.wait()
                log.info("server stopping")
                for task in running:
                    task.cancel()
        finally:
            listener.close()
            for task in list(self.tasks):
                task.cancel()
            await self.pool.stop()
            scratch.remove_stack_root(scratch_root)
            for job_id in list(self.in_flight):
                self.answer(job_id, Unavailable("server unavailable: it is shutting down").to_wire())
            unlink_quietly(self.server_sock)
        return 0


def remove_stale_socket(path):
    """Remove a socket file left by a dead process; refuse if something still answers on it."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        unlink_quietly(path)
        return
    finally:
        probe.close()
    log.error("%s is in use by a running process: stop it, or choose another socket path", path)
    raise SystemExit(EXIT_REFUSED)


def unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def serve(settings):
    server = Server(settings)
    try:
        return asyncio.run(server.run())
    except FaasError as exc:     # raised by the executor's start: say it, without a traceback
        log.error("cannot start: %s", exc.message)
        return EXIT_REFUSED
