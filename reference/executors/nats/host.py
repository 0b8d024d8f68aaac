"""`minifaas worker-host`: pre-forked workers on this machine taking jobs from NATS JetStream.

The host runs the same pool as the server's local executor (reference.executors.local.LocalWorkers),
takes jobs from its own subject `faas.jobs.<host id>` through a durable JetStream consumer
and, one job per idle worker, from the shared FIFO work queue `faas.jobs.shared`, fetches a
function's code by digest the first time it meets it (reference.executors.nats.codecache), and answers on
the server's result subject. A job is acknowledged only once answered, so a job this host
never finished is still in the stream. It announces itself with heartbeats; on
SIGTERM it says it is leaving, finishes what it was given, then says it is gone.
"""

import asyncio
import logging
import os
import re
import signal
import socket
import tempfile
import time

from reference.executors.local import LocalWorkers
from reference.executors.nats.codecache import CodeCache, pack, unpack
from reference.executors.nats.executor import (
    HEARTBEAT_S,
    HEARTBEATS,
    SHARED_ACK_WAIT_S,
    SHARED_CONSUMER,
    STREAM,
    connect,
    consumer_name,
    ensure_stream,
    host_subject,
    shared_consumer,
)
from reference.wire.errors import FaasError, WorkerLost
from reference.wire.jobs import Job

log = logging.getLogger(__name__)

# Longer than any job may run (config.LIMITS.max_timeout_ms): JetStream redelivers a job not
# acknowledged in this time, and a job still running must not be handed out twice.
ACK_WAIT_S = 120.0
# Jobs held by this host at once (queued in its workers or running); JetStream keeps the rest.
MAX_IN_FLIGHT = 256
DRAIN_GRACE_S = 30.0
# How long one pull from the shared queue waits for a job before asking again (and noticing
# that the host is leaving).
PULL_WAIT_S = 1.0


def default_host_id():
    return re.sub(r"[^A-Za-z0-9_-]", "-", "%s-%d" % (socket.gethostname(), os.getpid()))


class WorkerHost:
    def __init__(self, url, workers, host_id=None, cache_dir=None):
        self.url, self.workers = url, workers
        self.id = host_id or default_host_id()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.id) or self.id == SHARED_CONSUMER:
            raise SystemExit("--host-id %r: use 1 to 64 letters, digits, '_' or '-' (it is a NATS subject token), not 'shared'"
                             % self.id)
        self.cache = CodeCache(cache_dir or tempfile.mkdtemp(prefix="minifaas-cache-"))
        self.running = {}     # (server id, job id) -> task, from receipt to acknowledgement
        self.leaving = False
        self.stopping = asyncio.Event()
        self.pool = self.nc = self.sub = None
        self.pullers = []

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.pool = LocalWorkers(self.workers, on_up=lambda wid: None, on_down=self._slot_down)
        self.pool.start()  # fork before NATS: the children start from a quiet process
        self.nc = await connect(self.url, "minifaas-host-%s" % self.id)
        js = self.nc.jetstream()
        await ensure_stream(js)
        self.sub = await self._consume(js)
        pull = await shared_consumer(js)
        self.pullers = [loop.create_task(self._pull(pull, slot)) for slot in sorted(self.pool.workers)]
        beating = loop.create_task(self._heartbeats())
        log.info("worker host %s: %d workers taking jobs from %s, code cache %s",
                 self.id, self.workers, self.url, self.cache.root)
        await self.stopping.wait()
        await self._leave()
        beating.cancel()
        await self.pool.stop()
        await self.nc.close()
        return 0

    async def _consume(self, js):
        from nats.js.api import AckPolicy, ConsumerConfig

        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S, max_ack_pending=MAX_IN_FLIGHT)
        return await js.subscribe(host_subject(self.id), durable=consumer_name(self.id), stream=STREAM,
                                  cb=self._on_job, manual_ack=True, config=config,
                                  pending_msgs_limit=MAX_IN_FLIGHT * 4)

    async def _leave(self):
        """Stop taking jobs, finish the ones given, and tell the server before and after."""
        self.leaving = True
        await self._beat()
        try:
            await self.sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe: %s", exc)
        if self.pullers:  # each ends after its current pull and job
            await asyncio.wait(self.pullers, timeout=DRAIN_GRACE_S + PULL_WAIT_S)
        if self.running:
            log.info("worker host %s: finishing %d jobs before leaving", self.id, len(self.running))
            await asyncio.wait(list(self.running.values()), timeout=DRAIN_GRACE_S)
        await self._beat(gone=True)
        try:
            await self.nc.flush(timeout=2)
        except Exception as exc:
            log.debug("flush: %s", exc)

    # -- jobs --------------------------------------------------------------------------------

    async def _on_job(self, msg):
        header, body = unpack(msg.data)
        key = (header.get("reply"), header.get("job_id"))
        if key in self.running:
            return  # redelivered while this host still runs it: its answer and ack are coming
        self.running[key] = asyncio.ensure_future(self._run(msg, header, body))
        self.running[key].add_done_callback(lambda _: self.running.pop(key, None))

    async def _pull(self, pull, slot):
        """FIFO: take one job from the shared queue whenever this slot is idle, run it here,
        and only then take the next; a host whose workers are all busy takes nothing."""
        import nats.errors

        while not self.leaving:
            try:
                msgs = await pull.fetch(1, timeout=PULL_WAIT_S)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # NATS reconnecting: ask again shortly
                log.debug("pull from the shared queue: %s", exc)
                await asyncio.sleep(PULL_WAIT_S)
                continue
            for msg in msgs:
                try:
                    header, body = unpack(msg.data)
                except (FaasError, ValueError) as exc:
                    log.error("malformed job in the shared queue, dropped: %s", exc)
                    await msg.term()
                    continue
                key = (header.get("reply"), header.get("job_id"))
                if key in self.running:
                    continue  # redelivered while we still run it: its answer and ack are coming
                task = self.running[key] = asyncio.ensure_future(self._run(msg, header, body, slot=slot))
                task.add_done_callback(lambda _, key=key: self.running.pop(key, None))
                keeper = asyncio.ensure_future(_in_progress(msg))
                try:
                    await asyncio.shield(task)
                finally:
                    keeper.cancel()

    async def _run(self, msg, header, body, slot=None):
        job = Job.from_wire(header, body)
        try:
            job.fn_dir = await self.cache.get(self.nc, header["digest"])
            if slot is None:
                slot = header.get("slot", 0)
                if slot not in self.pool.workers:
                    slot = slot % self.pool.size
            outcome = await self.pool.submit(slot, job)
            answer, payload = outcome.to_wire()
        except FaasError as exc:
            if self.leaving and isinstance(exc, WorkerLost):
                # Our workers were stopped with us (a TERM to the whole process group): the
                # server schedules the job again when this host is gone.
                log.info("job %s not answered: its worker stopped with the host", job.job_id)
                return
            answer, payload = exc.to_wire(), b""
        answer.update(job_id=job.job_id, host=self.id)
        try:
            await self.nc.publish(header["reply"], pack(answer, payload))
            await msg.ack()
        except Exception as exc:  # not acknowledged: JetStream hands it out again
            log.warning("job %s: could not answer (%s)", job.job_id, exc)

    def _slot_down(self, slot, orphans):
        """A worker died: the jobs queued on it run on its replacement (same slot)."""
        for job, future in orphans:
            if self.pool.stopping:
                future.set_exception(WorkerLost("worker host %s is stopping" % self.id))
                continue
            again = self.pool.submit(slot, job)
            again.add_done_callback(lambda f, future=future: _copy(f, future))

    # -- heartbeats --------------------------------------------------------------------------

    async def _heartbeats(self):
        while True:
            await self._beat()
            await asyncio.sleep(HEARTBEAT_S)

    async def _beat(self, gone=False):
        beat = {"host": self.id, "slots": self.pool.size, "workers": self.pool.snapshot(),
                "leaving": self.leaving, "gone": gone, "fetches": self.cache.fetches,
                "hits": self.cache.hits, "running": len(self.running), "time": time.time()}
        try:
            await self.nc.publish("%s.%s" % (HEARTBEATS, self.id), pack(beat))
        except Exception as exc:  # while NATS reconnects: the next beat will do
            log.debug("heartbeat not sent: %s", exc)


async def _in_progress(msg):
    """Keep a shared-queue job ours while it runs: JetStream hands it to another host only if
    this one stops saying so (it died)."""
    while True:
        await asyncio.sleep(SHARED_ACK_WAIT_S / 3)
        try:
            await msg.in_progress()
        except Exception as exc:
            log.debug("in progress: %s", exc)


def _copy(source, target):
    if target.done():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def serve(settings):
    host = WorkerHost(settings.nats_url, settings.workers, host_id=settings.host_id, cache_dir=settings.cache)
    return asyncio.run(host.run())
