"""The local executor, the parent side of the worker pool: pre-forked processes, one pipe pair
each, replaced when they die. The child side is reference/worker/main.py.

`LocalWorkers` implements the executor seam, `Scalable` (reference/executors/__init__.py): the
server hands it (worker id, Job) pairs and gets Outcomes back, without knowing that a worker is
a forked process behind two pipes. An Outcome comes back as the worker wrote it (`Answer`):
its frame is passed on, not decoded and encoded again.

A worker's life: forked ("starting"); it makes its runtimes and says `booted` on its result
pipe ("idle": only now is it announced with on_up and given jobs); one job at a time ("busy");
it exits at the end of its job pipe, or dies. Its exit status is logged, and a dead worker is
replaced, with a back-off when workers die young, except one that could not boot (exit
WORKER_BOOT_ERROR, as gunicorn's arbiter halts on it): a replacement would fail the same way,
so the pool stops respawning and reports why through on_broken.
"""

import asyncio
import collections
import errno
import itertools
import logging
import os
import signal
import time

from reference.wire import framing, ops
from reference.wire.errors import ProtocolError, Timeout, WorkerLost
from reference.worker.main import WORKER_BOOT_ERROR, close_inherited_fds, worker_main
from reference.worker.sandbox import isolation

log = logging.getLogger(__name__)

# A stuck worker is killed this long after its job's own deadline should have fired.
WATCHDOG_GRACE_S = 2.0
# How often the watchdog looks at the busy workers (one timer for the pool, not one per job).
WATCHDOG_EVERY_S = 0.25
# Workers that die faster than this after their birth are respawned with a back-off.
QUICK_DEATH_S = 1.0
RESPAWN_DELAY_S = 0.1     # a worker that died after a long life is replaced this soon
# A worker whose result pipe closed is waited for this long before it is killed.
EXIT_WAIT_S = 2.0


class Answer:
    """A worker's Outcome frame as it came off its result pipe, not decoded into an Outcome:
    `to_wire()` gives the frame Outcome.to_wire would (the worker wrote it with that), with
    `worker` set. The server adds its queue_ms and passes it on to the gateway as it is."""

    __slots__ = ("header", "body")

    def __init__(self, header, body):
        self.header, self.body = header, body

    def to_wire(self):
        return self.header, self.body


class ResultReader:
    """A worker's result pipe, read by the loop's reader callback straight into a FrameSink:
    the first frame goes to `boot(worker, header)` (reading stops if it returns False), every
    other to `finish(worker, header, body)`. `ended` is set when the pipe closes (or a frame
    is bad, or the boot failed); the pipe is closed then."""

    def __init__(self, worker, fd, boot, finish):
        self.worker, self.fd, self.boot, self.finish = worker, fd, boot, finish
        self.booted = False
        self.sink = framing.FrameSink(self.frame)
        self.loop = asyncio.get_running_loop()
        self.ended = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self.readable)

    def readable(self):
        try:
            n = os.readv(self.fd, [self.sink.space()])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            return self.end(exc)
        if n == 0:
            return self.end(ProtocolError("connection closed inside a frame") if self.sink.pending() else None)
        try:
            self.sink.filled(n)
        except ProtocolError as exc:
            self.end(exc)
        except Exception as exc:   # a bug of ours: said, and the worker is treated as gone
            log.exception("worker %d: reading its results failed", self.worker.id)
            self.end(exc)

    def frame(self, header, body):
        if self.fd is None:
            return
        if self.booted:
            return self.finish(self.worker, header, body)
        if self.boot(self.worker, header):
            self.booted = True
        else:
            self.end(None)

    def end(self, error):
        if self.fd is None:
            return
        if isinstance(error, (OSError, ProtocolError)):
            log.error("worker %d: %s", self.worker.id, error)
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = None
        if not self.ended.done():
            self.ended.set_result(None)


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
        self.deadline = None         # when its current job is stuck (time.monotonic())
        self.booted = False          # said `booted`: its runtimes are made
        self.boot_error = None       # what it said instead, if it could not boot
        self.exit_code = None        # os.waitstatus_to_exitcode of its last process, once reaped

    def snapshot(self):
        state = "retiring" if self.retiring and self.state != "dead" else self.state
        return {"id": self.id, "pid": self.pid, "state": state, "jobs": self.jobs,
                "queue": len(self.queue)}


class LocalWorkers:
    """Pre-forked workers on this machine, talked to over pipes.

    on_up(wid) and on_down(wid, orphans) tell the server when a worker can take jobs and when
    one is gone; `orphans` are the jobs that were waiting for it and never started, which the
    server schedules again. on_broken(reason) says that a worker could not boot, so that no
    more will be started; `broken` keeps the reason.
    """

    def __init__(self, size, on_up, on_down, min_size=None, max_size=None, on_broken=None):
        self.min_size = size if min_size is None else min_size
        self.max_size = size if max_size is None else max_size
        self.size = max(self.min_size, min(size, self.max_size))
        self.on_up = on_up
        self.on_down = on_down
        self.on_broken = on_broken or (lambda reason: None)
        self.workers = {}
        self.stopping = False
        self.broken = None           # why workers cannot boot, once one could not
        self._quick_deaths = 0
        self._tasks = set()          # every worker's result reader, kept until it ends
        self._respawns = {}          # wid -> the timer of its replacement, not started yet
        self._watchdog = None        # the timer of the next look at the busy workers

    # -- the executor seam -------------------------------------------------------------------

    async def start(self):
        """Fork the workers; they come up (on_up) as each says it booted."""
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
        if self.stopping or self.broken or self.size >= self.max_size:
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

    def closing(self):
        self.stopping = True
        for timer in self._respawns.values():
            timer.cancel()
        self._respawns.clear()

    async def stop(self, grace=5.0):
        """Close every job pipe (workers exit at EOF), then TERM and KILL the slow ones."""
        self.closing()
        for w in self.workers.values():
            if w.writer:
                w.writer.close()
        deadline = time.monotonic() + grace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            while time.monotonic() < deadline and self._reap_all():
                await asyncio.sleep(0.05)
            for w in self.workers.values():
                if w.pid and w.exit_code is None:
                    self._signal(w, sig)
            deadline = time.monotonic() + 1.0
        self._reap_all()
        # Workers that a TERM or a Ctrl-C to the whole process group ended before we did leave
        # their cgroups behind: they are dead now, and their groups are swept as a new worker's
        # first call would.
        hierarchy = isolation.cgroups()
        if hierarchy is not None:
            hierarchy.sweep()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        # The readers end at the end of their pipes, now that every worker is gone.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=1.0)
            for task in late:
                task.cancel()

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
        worker.booted, worker.boot_error, worker.exit_code = False, None, None
        task = asyncio.get_running_loop().create_task(self._read_results(worker, job_w, result_r))
        self._tasks.add(task)
        task.add_done_callback(self._reader_ended)
        log.info("worker %d started (pid %d)", wid, pid)

    def _reader_ended(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a worker's result reader failed", exc_info=task.exception())

    async def _read_results(self, worker, job_w, result_r):
        loop = asyncio.get_running_loop()
        worker.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(job_w, "wb", 0))
        reader = ResultReader(worker, result_r, self._boot, self._finish)
        try:
            await reader.ended
        finally:
            reader.end(None)   # cancelled (a stop that could not wait): stop reading all the same
        await self._wait_exit(worker)
        self._bury(worker)

    def _boot(self, worker, header):
        """The worker's first frame: True once it says it booted (it is then idle and
        announced), False if it says it could not."""
        op = header.get("op")
        if op == ops.BOOT_ERROR:
            worker.boot_error = header.get("message") or "no reason given"
            return False
        if op != ops.BOOTED:
            raise ProtocolError("worker %d sent %r before saying it booted" % (worker.id, op))
        worker.booted, worker.state = True, "idle"
        self.on_up(worker.id)
        self._feed(worker)
        return True

    async def _wait_exit(self, worker):
        """The result pipe is closed: wait until the process is reaped (for its exit status),
        killing it if it lingers."""
        deadline = time.monotonic() + EXIT_WAIT_S
        while self._reap_all() and worker.exit_code is None:
            if time.monotonic() > deadline:
                self._signal(worker, signal.SIGKILL)
                deadline = time.monotonic() + EXIT_WAIT_S
            await asyncio.sleep(0.01)

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
        worker.deadline = job.started + job.timeout_ms / 1000.0 + WATCHDOG_GRACE_S
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(WATCHDOG_EVERY_S, self._watch)

    def _finish(self, worker, header, body):
        job, future = worker.current
        worker.current, worker.state = None, "idle"
        worker.idle_since = time.monotonic()
        worker.jobs += 1
        if not future.done():
            header.pop("job_id", None)   # the worker's echo of the job, not the Outcome's
            header["worker"] = worker.id
            future.set_result(Answer(header, body))
        self._feed(worker)

    def _watch(self):
        """Kill the workers stuck past their job's deadline; look again while any is busy."""
        self._watchdog = None
        now, busy = time.monotonic(), False
        for worker in list(self.workers.values()):
            if worker.current is None or worker.deadline is None:
                continue
            if now >= worker.deadline:
                worker.deadline = None     # killed once; its death answers the rest
                self._stuck(worker, worker.current[0])
            else:
                busy = True
        if busy:
            self._watchdog = asyncio.get_running_loop().call_later(WATCHDOG_EVERY_S, self._watch)

    def _stuck(self, worker, job):
        if worker.current and worker.current[0] is job:
            log.warning("worker %d stuck on job %s past its deadline: killing it", worker.id, job.job_id)
            _, future = worker.current
            if not future.done():
                future.set_exception(Timeout("function exceeded its %d ms time limit" % job.timeout_ms))
            self._signal(worker, signal.SIGKILL)

    def _bury(self, worker):
        """The worker's result pipe closed: it is dead. Fail its job, hand back its queue, respawn."""
        if worker.writer:
            worker.writer.close()
        worker.writer = None
        worker.state = "dead"
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
        if worker.booted or orphans:
            self.on_down(worker.id, orphans)
        if self.stopping or self.broken:
            return
        if not worker.booted and worker.exit_code == WORKER_BOOT_ERROR:
            self.broken = "worker %d could not boot: %s" % (worker.id, worker.boot_error or "see the server's log")
            log.error("%s; not starting any more workers (fix the cause and restart the server)", self.broken)
            self.on_broken(self.broken)
            return
        quick = time.monotonic() - worker.born < QUICK_DEATH_S
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        # Never at once: a TERM sent to the whole process group kills the workers a moment
        # before the server hears it, and must not start replacements (see `closing`).
        delay = min(5.0, 0.1 * 2 ** self._quick_deaths) if quick else RESPAWN_DELAY_S
        log.warning("worker %d (pid %s) died; starting a replacement in %.1fs", worker.id, worker.pid, delay)
        self._respawns[worker.id] = asyncio.get_running_loop().call_later(delay, self._respawn, worker.id)

    def _respawn(self, wid):
        del self._respawns[wid]
        if not self.stopping and not self.broken and self.workers[wid].state == "dead":
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
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except OSError as exc:
                if exc.errno in (errno.ECHILD, errno.ESRCH):
                    break
                raise
            if pid == 0:
                break
            for w in self.workers.values():
                if w.pid == pid and w.exit_code is None:
                    w.exit_code = os.waitstatus_to_exitcode(status)
                    log_exit(w, w.exit_code)
        return any(w.pid and w.exit_code is None for w in self.workers.values())


def log_exit(worker, code):
    """Say how a worker's process ended: an exit code, or the signal that killed it."""
    if code < 0:
        try:
            how = "was killed by %s" % signal.Signals(-code).name
        except ValueError:
            how = "was killed by signal %d" % -code
    elif code == WORKER_BOOT_ERROR:
        how = "exited with code %d (WORKER_BOOT_ERROR: it could not boot)" % code
    else:
        how = "exited with code %d" % code
    level = logging.INFO if code == 0 else logging.WARNING
    log.log(level, "worker %d (pid %d) %s", worker.id, worker.pid, how)
