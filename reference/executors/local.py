"""The local executor, the parent side of the worker pool: pre-forked processes, one pipe pair
each, replaced when they die. The child side is reference/worker/main.py.

`LocalWorkers` implements the executor seam (reference/executors/__init__.py): the server hands
it (worker id, Job) pairs and gets Outcomes back, without knowing that a worker is a forked
process behind two pipes.
"""

import asyncio
import collections
import errno
import itertools
import logging
import os
import signal
import time

from reference.wire import framing
from reference.wire.errors import Timeout, WorkerLost
from reference.wire.jobs import Outcome
from reference.worker.main import WORKER_BOOT_ERROR, close_inherited_fds, worker_main

log = logging.getLogger(__name__)

# A stuck worker is killed this long after its job's own deadline should have fired.
WATCHDOG_GRACE_S = 2.0
# Workers that die faster than this after their birth are respawned with a back-off.
QUICK_DEATH_S = 1.0


class Worker:
    """The server's view of one worker process."""

    def __init__(self, wid):
        self.id = wid
        self.pid = None
        self.born = 0.0
        self.state = "starting"      # starting, idle, busy, dead
        self.retiring = False        # auto-scaling took it out: it exits once idle, not replaced
        self.idle_since = time.monotonic()
        self.jobs = 0                # invocations answered since the pool started
        self.queue = collections.deque()  # (job, future) assigned to this worker, not yet sent
        self.current = None          # (job, future) being run
        self.writer = None           # asyncio write transport of the job pipe
        self.reader_task = None
        self.watchdog = None

    def snapshot(self):
        state = "retiring" if self.retiring and self.state != "dead" else self.state
        return {"id": self.id, "pid": self.pid, "state": state, "jobs": self.jobs,
                "queue": len(self.queue)}


class LocalWorkers:
    """Pre-forked workers on this machine, talked to over pipes.

    on_up(wid) and on_down(wid, orphans) tell the server when a worker can take jobs and when
    one is gone; `orphans` are the jobs that were waiting for it and never started, which the
    server schedules again.
    """

    def __init__(self, size, on_up, on_down, min_size=None, max_size=None):
        self.min_size = size if min_size is None else min_size
        self.max_size = size if max_size is None else max_size
        self.size = max(self.min_size, min(size, self.max_size))
        self.on_up = on_up
        self.on_down = on_down
        self.workers = {}
        self.stopping = False
        self._quick_deaths = 0

    # -- the executor seam -------------------------------------------------------------------

    def start(self):
        for wid in range(self.size):
            self._spawn(wid)

    def submit(self, wid, job):
        """Queue `job` on worker `wid`; the returned future gets its Outcome."""
        future = asyncio.get_running_loop().create_future()
        worker = self.workers[wid]
        worker.queue.append((job, future))
        self._feed(worker)
        return future

    def alive(self):
        return [w.id for w in self.workers.values() if w.state in ("idle", "busy") and not w.retiring]

    # -- auto-scaling --------------------------------------------------------------------

    def grow(self):
        """Add one worker, up to max_size; True if one was added."""
        if self.stopping or self.size >= self.max_size:
            return False
        wid = next(i for i in itertools.count() if i not in self.workers)
        self.size += 1
        log.info("scaling up to %d workers", self.size)
        self._spawn(wid)
        return True

    def retire_idle(self, cooldown_s):
        """Retire one worker idle for cooldown_s, down to min_size; True if one was retired.

        The server hears on_down first, so the balancer stops naming it; the worker then
        finishes whatever it was already given and exits at the end of its job pipe."""
        if self.stopping or self.size <= self.min_size:
            return False
        now = time.monotonic()
        idle = [w for w in self.workers.values()
                if w.state == "idle" and not w.retiring and not w.queue and now - w.idle_since >= cooldown_s]
        if not idle:
            return False
        worker = max(idle, key=lambda w: w.id)
        worker.retiring = True
        self.size -= 1
        log.info("scaling down to %d workers (retiring worker %d)", self.size, worker.id)
        self.on_down(worker.id, [])
        self._feed(worker)
        return True

    def waiting(self):
        """Jobs assigned to a worker and not yet started."""
        return sum(len(w.queue) for w in self.workers.values())

    def snapshot(self):
        return [w.snapshot() for w in sorted(self.workers.values(), key=lambda w: w.id)]

    async def stop(self, grace=5.0):
        """Close every job pipe (workers exit at EOF), then TERM and KILL the slow ones."""
        self.stopping = True
        for w in self.workers.values():
            if w.writer:
                w.writer.close()
        deadline = time.monotonic() + grace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            while time.monotonic() < deadline and self._reap_all():
                await asyncio.sleep(0.05)
            for w in self.workers.values():
                if w.pid and w.state != "dead":
                    self._signal(w, sig)
            deadline = time.monotonic() + 1.0
        self._reap_all()

    # -- process management --------------------------------------------------------------

    def _spawn(self, wid):
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the server's code
            try:
                close_inherited_fds({job_r, result_w})
                worker_main(job_r, result_w)
            finally:
                os._exit(WORKER_BOOT_ERROR)
        os.close(job_r)
        os.close(result_w)
        worker = self.workers.get(wid) or Worker(wid)
        self.workers[wid] = worker
        worker.pid, worker.born, worker.state = pid, time.monotonic(), "starting"
        worker.current, worker.idle_since = None, time.monotonic()
        loop = asyncio.get_running_loop()
        worker.reader_task = loop.create_task(self._read_results(worker, job_w, result_r))
        log.info("worker %d started (pid %d)", wid, pid)

    async def _read_results(self, worker, job_w, result_r):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=framing.MAX_BODY)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(result_r, "rb", 0))
        worker.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(job_w, "wb", 0))
        worker.state = "idle"  # only now can it take jobs, and only now is it announced
        self.on_up(worker.id)
        self._feed(worker)
        frames = framing.AsyncFrameReader(reader)
        try:
            while True:
                header, body = await frames.read_frame()
                self._finish(worker, Outcome.from_wire(header, body))
        except (EOFError, ConnectionError, framing.ProtocolError) as exc:
            if not isinstance(exc, EOFError):
                log.error("worker %d: %s", worker.id, exc)
        self._bury(worker)

    def _feed(self, worker):
        """Send the worker its next job if it is idle: it runs one at a time."""
        if worker.retiring and worker.state == "idle" and not worker.queue and worker.writer is not None:
            worker.writer.close()  # end of its job pipe: the worker exits, and is not replaced
            worker.writer = None
            return
        if worker.state != "idle" or worker.writer is None or not worker.queue:
            return
        job, future = worker.queue.popleft()
        if future.done():  # the caller gave up while the job waited
            return self._feed(worker)
        header, body = job.to_wire()
        worker.writer.write(framing.encode(header, body))
        worker.state, worker.current = "busy", (job, future)
        job.started = time.monotonic()
        deadline = job.timeout_ms / 1000.0 + WATCHDOG_GRACE_S
        worker.watchdog = asyncio.get_running_loop().call_later(deadline, self._stuck, worker, job)

    def _finish(self, worker, outcome):
        if worker.watchdog:
            worker.watchdog.cancel()
        job, future = worker.current
        worker.current, worker.state = None, "idle"
        worker.idle_since = time.monotonic()
        worker.jobs += 1
        outcome.worker = worker.id
        if not future.done():
            future.set_result(outcome)
        self._feed(worker)

    def _stuck(self, worker, job):
        if worker.current and worker.current[0] is job:
            log.warning("worker %d stuck on job %s past its deadline: killing it", worker.id, job.job_id)
            _, future = worker.current
            if not future.done():
                future.set_exception(Timeout("function exceeded its %d ms time limit" % job.timeout_ms))
            self._signal(worker, signal.SIGKILL)

    def _bury(self, worker):
        """The worker's result pipe closed: it is dead. Fail its job, hand back its queue, respawn."""
        if worker.watchdog:
            worker.watchdog.cancel()
        if worker.writer:
            worker.writer.close()
        worker.writer = None
        worker.state = "dead"
        self._reap_all()
        if worker.current:
            job, future = worker.current
            if not future.done():
                future.set_exception(WorkerLost(
                    "worker %d died while running the invocation (it was restarted; the call was not retried "
                    "because it had started)" % worker.id))
            worker.current = None
        orphans = list(worker.queue)
        worker.queue.clear()
        if worker.retiring:
            del self.workers[worker.id]
            log.info("worker %d retired", worker.id)
            return
        self.on_down(worker.id, orphans)
        if self.stopping:
            return
        quick = time.monotonic() - worker.born < QUICK_DEATH_S
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        delay = min(5.0, 0.1 * 2 ** self._quick_deaths) if quick else 0.0
        log.warning("worker %d (pid %s) died; starting a replacement in %.1fs", worker.id, worker.pid, delay)
        asyncio.get_running_loop().call_later(delay, self._respawn, worker.id)

    def _respawn(self, wid):
        if not self.stopping and self.workers[wid].state == "dead":
            self._spawn(wid)

    def _signal(self, worker, sig):
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _reap_all(self):
        """Collect dead children without blocking; True while some worker is still running."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECHILD, errno.ESRCH):
                    break
                raise
            if pid == 0:
                break
            for w in self.workers.values():
                if w.pid == pid:
                    w.state = "dead"
        return any(w.state != "dead" for w in self.workers.values())
