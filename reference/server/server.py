"""The server process: takes invocations from gateways, asks the balancer which worker runs
each one, runs it on that worker and answers with the Outcome.

One asyncio loop owns everything: the gateway connections (many invocations in flight on
each), the persistent connection to the balancer (reconnected whenever it drops) and the
worker pool's pipes. Nothing on the request path sleeps or polls.
"""

import asyncio
import itertools
import logging
import os
import signal
import time

from reference.executors.local import LocalWorkers
from reference.wire import framing
from reference.wire.errors import FaasError, Overloaded, ProtocolError, Unavailable
from reference.wire.jobs import Job

log = logging.getLogger(__name__)

BALANCER_RETRY_S = 0.2
STATS_TIMEOUT_S = 1.0
# Auto-scaling looks at the queues this often, and retires a worker idle this long.
SCALE_EVERY_S = 0.25


class Pending:
    """An invocation between its arrival and its answer."""

    __slots__ = ("job", "reply", "arrived", "worker")

    def __init__(self, job, reply):
        self.job, self.reply, self.arrived, self.worker = job, reply, time.monotonic(), None


def make_executor(settings, on_up, on_down):
    """The executor seam: whatever runs jobs offers start, submit, alive, snapshot and stop."""
    if settings.executor == "nats":
        from reference.executors.nats.executor import NatsWorkers, balancer_strategy

        # The strategy is the balancer's option: NatsWorkers asks the balancer for it (FIFO
        # means a shared work queue in NATS rather than each host's own subject).
        return NatsWorkers(settings.nats_url, on_up=on_up, on_down=on_down,
                           strategy=lambda: balancer_strategy(settings.lb_sock))
    return LocalWorkers(settings.workers, on_up=on_up, on_down=on_down,
                        min_size=settings.min_workers, max_size=settings.max_workers)


class Server:
    def __init__(self, settings):
        self.server_sock = settings.server_sock
        self.lb_sock = settings.lb_sock
        self.max_queue = settings.max_queue
        self.scale_cooldown = settings.scale_cooldown
        self.pool = make_executor(settings, self._worker_up, self._worker_down)
        self.pending = {}            # job id -> Pending, from arrival to answer
        self.unassigned = set()      # job ids submitted to the balancer and not yet assigned
        self.job_ids = itertools.count(1)
        self.stat_ids = itertools.count(1)
        self.stat_waiters = {}
        self.lb_writer = None
        self.stopping = asyncio.Event()

    # -- gateway side --------------------------------------------------------------------

    async def handle_gateway(self, reader, writer):
        log.info("gateway connected")
        frames = framing.AsyncFrameReader(reader)
        try:
            while True:
                header, body = await frames.read_frame()
                self.dispatch_request(header, body, writer)
        except (EOFError, ConnectionError):
            pass
        except ProtocolError as exc:
            log.error("closing a gateway connection: %s", exc)
        finally:
            writer.close()
            log.info("gateway disconnected")

    def dispatch_request(self, header, body, writer):
        op, req = header.get("op"), header.get("req")

        def reply(answer, payload=b""):
            answer["req"] = req
            if not writer.is_closing():
                writer.write(framing.encode(answer, payload))

        try:
            if op == "invoke":
                return self.invoke(header, body, reply)
            if op == "stats":
                return asyncio.ensure_future(self.stats(reply))
            if op == "health":
                return reply(self.health())
            raise ProtocolError("unknown op %r" % op)
        except FaasError as exc:
            reply(exc.to_wire())

    def invoke(self, header, body, reply):
        if len(self.pending) >= self.max_queue:
            raise Overloaded("the platform is overloaded (%d invocations waiting); retry later" % len(self.pending),
                             retry_after=1)
        if self.lb_writer is None:
            raise Unavailable("balancer unavailable: no load balancer is connected to the server")
        if not self.pool.alive():
            raise Unavailable("no worker available")
        header = dict(header, job_id=next(self.job_ids))
        job = Job.from_wire(header, body)
        self.pending[job.job_id] = Pending(job, reply)
        self.submit(job)

    def submit(self, job):
        self.unassigned.add(job.job_id)
        self.lb_writer.write(framing.encode({"op": "submit", "job": job.job_id, "fn": job.fn_id}))

    def answer(self, job_id, outcome=None, error=None):
        pending = self.pending.pop(job_id, None)
        self.unassigned.discard(job_id)
        if pending is None:
            return
        if error is not None:
            return pending.reply(error.to_wire())
        outcome.queue_ms = round((getattr(pending.job, "started", time.monotonic()) - pending.arrived) * 1000, 3)
        header, body = outcome.to_wire()
        pending.reply(header, body)

    def health(self):
        return {"server": True, "balancer": self.lb_writer is not None,
                "workers": len(self.pool.alive()), "size": self.pool.size}

    async def stats(self, reply):
        answer = {"workers": self.pool.snapshot(), "balancer": self.lb_writer is not None,
                  "pending": len(self.pending)}
        if self.lb_writer is not None:
            req = next(self.stat_ids)
            waiter = self.stat_waiters[req] = asyncio.get_running_loop().create_future()
            self.lb_writer.write(framing.encode({"op": "stats", "req": req}))
            try:
                lb = await asyncio.wait_for(waiter, STATS_TIMEOUT_S)
                answer.update(strategy=lb.get("strategy"), queue=lb.get("queue", 0) + sum(
                    w["queue"] for w in answer["workers"]), balancer_workers=lb.get("workers"))
            except asyncio.TimeoutError:
                answer["balancer"] = False
            finally:
                self.stat_waiters.pop(req, None)
        if not answer["balancer"]:
            return reply(Unavailable("balancer unavailable").to_wire())
        reply(answer)

    # -- balancer side -------------------------------------------------------------------

    async def balancer_link(self):
        """Keep one connection to the balancer; after each (re)connect, register every worker."""
        announced = False
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.open_unix_connection(self.lb_sock, limit=framing.MAX_BODY)
            except OSError as exc:
                if not announced:
                    log.info("waiting for the balancer at %s (%s)", self.lb_sock, exc.strerror or exc)
                    announced = True
                await asyncio.sleep(BALANCER_RETRY_S)
                continue
            announced = False
            log.info("connected to the balancer at %s", self.lb_sock)
            self.lb_writer = writer
            alive = self.pool.alive()
            if alive:
                writer.write(framing.encode({"op": "register", "workers": [{"id": w} for w in alive]}))
            frames = framing.AsyncFrameReader(reader)
            try:
                while True:
                    header, _ = await frames.read_frame()
                    self.on_balancer(header)
            except (EOFError, ConnectionError, ProtocolError) as exc:
                log.warning("lost the balancer (%s)", exc or "closed")
            self.lb_writer = None
            writer.close()
            # Jobs the balancer held are lost with it: answer them rather than let them hang.
            for job_id in list(self.unassigned):
                self.answer(job_id, error=Unavailable("balancer unavailable: it went away before scheduling the call"))

    def on_balancer(self, header):
        op = header.get("op")
        if op == "assign":
            self.run_on(header["job"], header["worker"])
        elif op == "reject":
            self.answer(header["job"], error=Unavailable(header.get("message") or "no worker available"))
        elif op == "stats":
            waiter = self.stat_waiters.get(header.get("req"))
            if waiter and not waiter.done():
                waiter.set_result(header)
        else:
            log.warning("unknown message from the balancer: %r", op)

    def run_on(self, job_id, wid):
        pending = self.pending.get(job_id)
        self.unassigned.discard(job_id)
        if pending is None:
            return self.done(job_id, wid)  # answered meanwhile (e.g. timed out): free the worker's slot
        if wid not in self.pool.alive():
            return self.submit(pending.job)  # assigned to a worker that just died: schedule again
        pending.worker = wid
        future = self.pool.submit(wid, pending.job)
        future.add_done_callback(lambda f: self.job_finished(job_id, wid, f))

    def job_finished(self, job_id, wid, future):
        self.done(job_id, wid)
        exc = future.exception()
        if exc is not None:
            self.answer(job_id, error=exc if isinstance(exc, FaasError) else Unavailable(str(exc)))
        else:
            self.answer(job_id, outcome=future.result())

    def done(self, job_id, wid):
        if self.lb_writer is not None:
            self.lb_writer.write(framing.encode({"op": "done", "job": job_id, "worker": wid}))

    # -- pool events ---------------------------------------------------------------------

    def _worker_up(self, wid):
        if self.lb_writer is not None:
            self.lb_writer.write(framing.encode({"op": "register", "workers": [{"id": wid}]}))

    def _worker_down(self, wid, orphans):
        if self.lb_writer is not None:
            self.lb_writer.write(framing.encode({"op": "unregister", "workers": [wid]}))
        for job, future in orphans:
            # Nothing of these ran: they are retried on whichever worker the balancer names.
            if not future.done() and job.job_id in self.pending and self.lb_writer is not None:
                self.submit(job)
            elif job.job_id in self.pending:
                self.answer(job.job_id, error=Unavailable("balancer unavailable"))

    # -- auto-scaling ----------------------------------------------------------------------

    async def autoscale(self):
        """Add a worker while jobs wait and every worker is busy; retire one idle for a while.

        Off the request path: a periodic look at the queues, one step per look, so the pool
        grows and shrinks gradually instead of chasing every burst."""
        pool = self.pool
        while True:
            await asyncio.sleep(SCALE_EVERY_S)
            waiting = len(self.unassigned) + pool.waiting()
            busy = all(w["state"] == "busy" for w in pool.snapshot() if w["state"] in ("idle", "busy"))
            if waiting and busy:
                pool.grow()
            elif not waiting:
                pool.retire_idle(self.scale_cooldown)

    # -- life cycle ----------------------------------------------------------------------

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        started = self.pool.start()  # fork before any other task runs: the children start from a quiet process
        if asyncio.iscoroutine(started):
            await started
        remove_stale_socket(self.server_sock)
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            listener = await asyncio.start_unix_server(self.handle_gateway, self.server_sock, limit=framing.MAX_BODY)
        finally:
            os.umask(old_umask)
        link = loop.create_task(self.balancer_link())
        scaler = None
        if getattr(self.pool, "max_size", 0) > getattr(self.pool, "min_size", 0):
            scaler = loop.create_task(self.autoscale())
            log.info("auto-scaling between %d and %d workers", self.pool.min_size, self.pool.max_size)
        log.info("server listening on %s with %d workers", self.server_sock, self.pool.size)
        await self.stopping.wait()
        log.info("server stopping")
        listener.close()
        link.cancel()
        if scaler:
            scaler.cancel()
        await self.pool.stop()
        for job_id in list(self.pending):
            self.answer(job_id, error=Unavailable("server unavailable: it is shutting down"))
        unlink_quietly(self.server_sock)
        return 0


def remove_stale_socket(path):
    """Remove a socket file left by a dead process; refuse if something still answers on it."""
    import socket

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
    raise SystemExit("%s is in use by a running process: stop it, or choose another socket path" % path)


def unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def serve(settings):
    server = Server(settings)
    return asyncio.run(server.run())
