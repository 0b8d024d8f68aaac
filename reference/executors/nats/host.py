"""`minifaas worker-host`: pre-forked workers on this machine taking jobs from NATS JetStream.

The host runs the same pool as the server's local executor (reference.executors.local.LocalWorkers),
takes jobs from its own subject `faas.jobs.<host id>` through a durable JetStream consumer
and, one job per free slot, from the shared FIFO work queue `faas.jobs.shared`, fetches a
function's code by digest the first time it meets it (reference.executors.nats.codecache), and
answers on the server's result subject until the server confirms it has the answer; only then
is the job acknowledged (and so removed from the stream). While it holds a job it tells
JetStream so every ACK_WAIT_S / 3, so a job goes out again only if this host dies or freezes.
It announces itself with heartbeats; on SIGTERM it says it is leaving, finishes what it was
given, then says it is gone.
"""

import asyncio
import collections
import logging
import os
import re
import signal
import socket
import tempfile
import time
import uuid

from reference.executors.local import LocalWorkers
from reference.executors.nats.codecache import CodeCache, pack, unpack
from reference.executors.nats.connection import (NatsRefused, connect, default_replicas, ensure_stream,
                                                 when_jetstream_answers)
from reference.executors.nats.executor import (
    ACK_WAIT_S,
    HEARTBEAT_S,
    HEARTBEATS,
    SHARED_CONSUMER,
    STREAM,
    consumer_name,
    host_subject,
    shared_consumer,
)
from reference.wire.errors import FaasError, PayloadTooLarge, WorkerLost
from reference.wire.jobs import Job
from reference.worker.sandbox import scratch

log = logging.getLogger(__name__)

# Jobs held by this host at once (queued in its workers or running); JetStream keeps the rest.
MAX_IN_FLIGHT = 256
DRAIN_GRACE_S = 30.0
# How long one pull from the shared queue waits for a job before asking again (and noticing
# that the host is leaving).
PULL_WAIT_S = 1.0
# An answer is sent again until the server confirms it (a NATS node dying in between loses
# core NATS messages), for at most this long; then the server is taken to be gone.
ANSWER_WAIT_S = 1.0
ANSWER_TRY_S = 20.0
# Every this many heartbeats, check that our consumer still exists (and make it again if not).
CHECK_EVERY = 4
# Jobs answered and confirmed lately: a redelivery of one (its ack lost with a NATS node) is
# acknowledged without running it again.
ANSWERED_KEPT = 4096
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}_[0-9]+")


def default_host_id():
    return re.sub(r"[^A-Za-z0-9_-]", "-", "%s-%d" % (socket.gethostname(), os.getpid()))


class WorkerHost:
    def __init__(self, nats, workers, host_id=None, cache_dir=None):
        self.settings, self.workers = nats, workers
        self.id = host_id or default_host_id()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.id) or self.id == SHARED_CONSUMER:
            raise SystemExit("--host-id %r: use 1 to 64 letters, digits, '_' or '-' (it is a NATS subject token), not 'shared'"
                             % self.id)
        self.boot = uuid.uuid4().hex[:12]   # this process: a restart under the same id is told apart
        self.cache = CodeCache(cache_dir or tempfile.mkdtemp(prefix="minifaas-cache-"))
        self.running = {}     # (reply, job id) -> task, from receipt to acknowledgement
        self.held = {}        # (reply, job id) -> the JetStream message, told "in progress"
        self.answered = collections.OrderedDict()   # (reply, job id) -> None, the latest confirmed
        self.tasks = set()    # every task started here, kept until it ends
        self.leaving = False
        self.refused = None   # why NATS must not be used (a node that lets anyone in)
        self.stopping = asyncio.Event()
        self.pool = self.nc = self.js = self.sub = None
        self.pullers = []

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task):
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker host task failed: %r", task.exception())

    def _signalled(self):
        if self.pool is not None:
            self.pool.closing()     # its workers may have had the same signal: none is replaced
        self.stopping.set()

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled)
        self.pool = LocalWorkers(self.workers, on_up=lambda wid: None, on_down=self._slot_down)
        # The host's own scratch root, as a server's (FAAS_SCRATCH_ROOT, inherited by its workers).
        scratch_root = scratch.make_stack_root()
        try:
            return await self._serve()
        finally:
            scratch.remove_stack_root(scratch_root)

    async def _serve(self):
        await self.pool.start()  # fork before NATS: the children start from a quiet process
        try:
            self.nc = await connect(self.settings, "minifaas-host-%s" % self.id, on_refused=self._refused)
            self.js = self.nc.jetstream()
            await when_jetstream_answers(self._join_stream, "the jobs stream and this host's consumer")
        except NatsRefused as exc:
            log.error("worker host %s: %s", self.id, exc.message)
            await self.pool.stop()
            return 2
        self.pullers = [self._spawn(self._pull(slot)) for slot in sorted(self.pool.workers)]
        beating = self._spawn(self._heartbeats())
        keeping = self._spawn(self._keep_held())
        log.info("worker host %s: %d workers taking jobs from %s, code cache %s",
                 self.id, self.workers, self.settings.url, self.cache.root)
        await self.stopping.wait()
        await self._leave()
        beating.cancel()
        keeping.cancel()
        await self.pool.stop()
        await self.nc.close()
        return 2 if self.refused else 0

    async def _join_stream(self):
        await ensure_stream(self.js, self.settings.replicas or default_replicas(self.settings.url))
        await self._bind_own_consumer(fresh=True)

    def _refused(self, why):
        log.error("worker host %s stops: %s", self.id, why)
        self.refused = why
        self.stopping.set()

    async def _bind_own_consumer(self, fresh=False):
        """Our durable push consumer. `fresh`, at start: delete the one a previous process of
        this host left, so the jobs it was given and never acknowledged come to us now rather
        than when their ack wait lapses."""
        import nats.js.errors
        from nats.js.api import AckPolicy, ConsumerConfig

        if fresh:
            try:
                await self.js.delete_consumer(STREAM, consumer_name(self.id))
            except nats.js.errors.NotFoundError:
                pass
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe: %s", exc)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S, max_ack_pending=MAX_IN_FLIGHT)
        self.sub = await self.js.subscribe(host_subject(self.id), durable=consumer_name(self.id), stream=STREAM,
                                           cb=self._on_job, manual_ack=True, config=config,
                                           pending_msgs_limit=MAX_IN_FLIGHT * 4)

    async def _check_consumer(self):
        """Make our consumer again if it is gone (deleted, or the stream lost with a node's
        store): a host heartbeating with no consumer would hold its share of jobs forever."""
        import nats.js.errors

        try:
            await self.js.consumer_info(STREAM, consumer_name(self.id), timeout=2)
        except nats.js.errors.NotFoundError:
            log.warning("worker host %s: its consumer is gone: making it again", self.id)
            try:
                await ensure_stream(self.js, self.settings.replicas or default_replicas(self.settings.url))
                await self._bind_own_consumer()
            except Exception as exc:
                log.warning("worker host %s: could not make its consumer again: %s", self.id, exc)
        except Exception as exc:  # NATS reconnecting, a leader being elected: next time
            log.debug("consumer check: %s", exc)

    async def _leave(self):
        """Stop taking jobs, finish the ones given, and tell the server before and after."""
        self.leaving = True
        await self._beat()
        # Jobs the server sent before it heard us still arrive for a moment: run them too.
        await asyncio.sleep(2 * HEARTBEAT_S)
        if self.pullers:  # each ends after its current pull and job
            await asyncio.wait(self.pullers, timeout=DRAIN_GRACE_S + PULL_WAIT_S)
        if self.running:
            log.info("worker host %s: finishing %d jobs before leaving", self.id, len(self.running))
            await asyncio.wait(list(self.running.values()), timeout=DRAIN_GRACE_S)
        try:
            await self.sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe: %s", exc)
        await self._beat(gone=True)
        try:
            await self.nc.flush(timeout=2)
        except Exception as exc:
            log.debug("flush: %s", exc)

    # -- jobs --------------------------------------------------------------------------------

    def _take(self, msg):
        """(key, header, body) of a job message to run now, or None: malformed (dropped),
        already answered (acknowledged again) or already held (its answer is coming)."""
        try:
            header, body = unpack(msg.data)
            key = (str(header["reply"]), header["job_id"])
        except (FaasError, ValueError, KeyError, TypeError) as exc:
            log.error("malformed job, dropped: %s", exc)
            self._spawn(msg.term())
            return None
        if key in self.answered:
            self._spawn(msg.ack())
            return None
        if key in self.running:
            self.held[key] = msg   # the newest delivery is the one to keep in progress
            return None
        self.held[key] = msg
        return key, header, body

    async def _on_job(self, msg):
        taken = self._take(msg)
        if taken is not None:
            key = taken[0]
            task = self.running[key] = self._spawn(self._run(*taken))
            task.add_done_callback(lambda _, key=key: self._release(key))

    def _release(self, key):
        self.running.pop(key, None)
        self.held.pop(key, None)

    async def _pull(self, slot):
        """FIFO: this slot's own pull subscription takes one job whenever the slot is free,
        runs it here, and only then asks for the next: a busy slot holds no job."""
        import nats.errors

        pull = None
        while not self.leaving:
            try:
                pull = pull or await shared_consumer(self.js)
                msgs = await pull.fetch(1, timeout=PULL_WAIT_S)
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # NATS reconnecting, or the consumer gone: ask again shortly
                log.debug("pull from the shared queue: %s", exc)
                if "not found" in str(exc).lower() and pull is not None:
                    pull = None
                await asyncio.sleep(PULL_WAIT_S)
                continue
            for msg in msgs:
                taken = self._take(msg)
                if taken is None:
                    continue
                key = taken[0]
                ran = asyncio.get_running_loop().create_future()
                task = self.running[key] = self._spawn(self._run(*taken, slot=slot, ran=ran))
                task.add_done_callback(lambda _, key=key: self._release(key))
                # The slot is free once its worker is: the answer's confirmation and the
                # acknowledgement go on meanwhile.
                await asyncio.wait([task, ran], return_when=asyncio.FIRST_COMPLETED)

    async def _run(self, key, header, body, slot=None, ran=None):
        """Run a job and answer it; `ran` (FIFO) is set as soon as its worker is free."""
        try:
            await self._execute(key, header, body, slot, ran)
        finally:
            if ran is not None and not ran.done():
                ran.set_result(None)

    async def _execute(self, key, header, body, slot, ran):
        reply = key[0]
        try:
            job = Job.from_wire(header, body)
            if not JOB_ID_RE.fullmatch(str(job.fn_id)):
                raise FaasError("malformed function id %r" % (job.fn_id,))
            job.fn_dir = await self.cache.get(self.nc, str(header["digest"]))
            if slot is None:
                slot = header.get("slot", 0)
                if slot not in self.pool.workers:
                    slot = int(slot) % self.pool.size
            outcome = await self.pool.submit(slot, job)
            if ran is not None:
                ran.set_result(None)
            answer, payload = outcome.to_wire()
        except FaasError as exc:
            if self.leaving and isinstance(exc, WorkerLost):
                # Our workers were stopped with us (a TERM to the whole process group): the
                # server schedules the job again when this host is gone.
                log.info("job %s not answered: its worker stopped with the host", key[1])
                return
            answer, payload = exc.to_wire(), b""
        except (TypeError, ValueError, KeyError) as exc:
            answer, payload = FaasError("malformed job: %s" % exc).to_wire(), b""
        answer.update(job_id=key[1], host=self.id, token=header.get("token"))
        data = pack(answer, payload)
        if len(data) + 512 > self.nc.max_payload:   # 512: the message's own headers
            error = PayloadTooLarge("the function's output (%d bytes) is larger than the NATS servers' "
                                    "max_payload (%d bytes): raise max_payload (docs/NATS.md)"
                                    % (len(payload), self.nc.max_payload))
            data = pack(dict(error.to_wire(), job_id=key[1], host=self.id, token=header.get("token")))
        if await self._answer(reply, data, key[1]):
            self.answered[key] = None
            while len(self.answered) > ANSWERED_KEPT:
                self.answered.popitem(last=False)
        msg = self.held.get(key)
        try:
            await msg.ack()
        except Exception as exc:  # not acknowledged: redelivered, and acknowledged then
            log.warning("job %s: could not acknowledge (%s)", key[1], exc)

    async def _answer(self, reply, data, job_id):
        """Send the answer until the server says it has it, or ANSWER_TRY_S pass."""
        deadline = time.monotonic() + ANSWER_TRY_S
        while True:
            try:
                await self.nc.request(reply, data, timeout=ANSWER_WAIT_S)
                return True
            except Exception as exc:  # no responders (the server reconnecting), timeout
                if time.monotonic() > deadline:
                    log.warning("job %s: the server did not confirm its answer (%s): given up", job_id, exc)
                    return False
                log.debug("job %s: answer not confirmed (%s), again", job_id, exc)
                await asyncio.sleep(0.2)

    async def _keep_held(self):
        """Tell JetStream every job we hold is in progress, so that it goes to no one else."""
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            for msg in list(self.held.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:
                    log.debug("in progress: %s", exc)

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
        beats = 0
        while True:
            await self._beat()
            beats += 1
            if beats % CHECK_EVERY == 0 and not self.leaving:
                await self._check_consumer()
            await asyncio.sleep(HEARTBEAT_S)

    async def _beat(self, gone=False):
        held = {}
        for reply, job_id in self.running:
            held.setdefault(reply, []).append(job_id)
        beat = {"host": self.id, "boot": self.boot, "slots": self.pool.size, "workers": self.pool.snapshot(),
                "leaving": self.leaving, "gone": gone, "fetches": self.cache.fetches,
                "hits": self.cache.hits, "running": len(self.running), "held": held, "time": time.time()}
        try:
            await self.nc.publish("%s.%s" % (HEARTBEATS, self.id), pack(beat))
        except Exception as exc:  # while NATS reconnects: the next beat will do
            log.debug("heartbeat not sent: %s", exc)


def _copy(source, target):
    if target.done():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def serve(settings):
    host = WorkerHost(settings.nats, settings.workers, host_id=settings.host_id, cache_dir=settings.cache)
    return asyncio.run(host.run())
