"""The injector's senders as asyncio protocols, for the open loop and the closed: a request is
written onto an idle connection and its answer parsed in `data_received`, with no task, no
stream and no queue per request.

Why: with a task, a StreamReader and a queue per request (`injector._schedule_streams` and
`injector._closed_streams`, kept as the fallback: FAAS_INJECT_SENDER=streams) the open loop
took 20-25 % more CPU a request and the closed loop 20 % more, CPU the stack under test shares
on 2 cores (docs/PERFORMANCE.md, "The injector's own pauses, and its senders as protocols").
The contract is the streams version's, and tests/integration/test_injector.py runs on both:
every request gives one Sample; a request waits for a free connection when all `senders` are
busy (and counts that wait in its latency); a kept-alive connection the server closed while
idle is opened again once for the request that found it closed; an answer with `Connection:
close` closes it; a request past `timeout` is a "client_timeout" and its connection is dropped;
nothing here raises for a platform or network failure.
"""

import asyncio
import collections
import time

from harness.load import injector


class _Job:
    """One scheduled request on its way: when it was meant to go, when it went, and its timer."""
    __slots__ = ("intended", "name", "request", "sent", "timer", "retried", "thread")

    def __init__(self, intended, name, request, thread=None):
        self.intended, self.name, self.request, self.thread = intended, name, request, thread
        self.sent = self.timer = None
        self.retried = False


class _Sender(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight, its answer read from the
    connection's buffer (head to the blank line, then Content-Length bytes)."""

    def __init__(self, pool):
        self.pool, self.transport, self.job = pool, None, None
        self.buffer = bytearray()
        self.answers = 0        # on this connection: a close before any is not a stale keep-alive

    def connection_made(self, transport):
        self.transport = transport

    def send(self, job):
        self.job = job
        self.transport.write(job.request)

    def data_received(self, data):
        if self.pool is None:
            return              # dropped (timed out): what still arrives is no one's
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > injector.MAX_HEADER:
                self.pool.failed(self, "connection")
            return
        head = bytes(self.buffer[:end]).lower()
        i = head.find(b"\r\ncontent-length:")
        if i < 0 or self.job is None:
            self.pool.failed(self, "connection")    # no length, or an answer nobody asked for
            return
        line_end = head.find(b"\r\n", i + 2)
        try:
            length = int(head[i + 17:line_end if line_end >= 0 else len(head)])
        except ValueError:
            self.pool.failed(self, "connection")
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        status = int(head[9:12]) if head.find(b"\r\n") >= 12 else 0
        self.answers += 1
        self.pool.answered(self, status, body, b"\r\nconnection: close" in head)

    def connection_lost(self, exc):
        self.transport = None
        if self.pool is not None:   # else dropped (timed out, broken, closed): no one's news
            self.pool.lost(self)


class Pool:
    """The connections of one run, opened as needed up to `senders`, and the requests waiting
    for one (first come, first served): the open loop submits each request at its time."""

    def __init__(self, loop, host, port, senders, timeout, progress):
        self.loop, self.host, self.port = loop, host, port
        self.senders, self.timeout, self.progress = senders, timeout, progress
        self.idle, self.waiting = [], collections.deque()
        self.slots = 0              # connections open or opening
        self.samples, self.expected, self.finished = [], None, None

    def submit(self, intended, name, request, thread=None):
        job = _Job(intended, name, request, thread)
        if self.idle:
            self._start(self.idle.pop(), job)
        else:
            self._place(job)

    def _place(self, job):
        """A job no idle connection takes: on a new one while there is room, else in the queue."""
        if self.slots < self.senders:
            self.slots += 1
            self._open(job)
        else:
            self.waiting.append(job)

    async def prepare(self, count):
        """Open `count` connections before a run starts, idle (the closed loop's, whose requests
        do not count the connect). One that fails is not retried here: a request opens it again
        and counts the failure."""
        opened = await asyncio.gather(*(self.loop.create_connection(lambda: _Sender(self), self.host, self.port)
                                        for _ in range(count)), return_exceptions=True)
        for result in opened:
            if not isinstance(result, BaseException):
                self.slots += 1
                self.idle.append(result[1])

    async def wait(self, count):
        """Until `count` samples are in (every submitted request answered, failed or timed out)."""
        if len(self.samples) < count:
            self.expected, self.finished = count, self.loop.create_future()
            await self.finished

    def close(self):
        for sender in self.idle:
            if sender.transport is not None:
                sender.transport.close()
        self.idle = []

    # -- what the connections report -----------------------------------------------------------

    def answered(self, sender, status, body, close):
        job = self._take(sender)
        self._record(job, injector.answer_sample(job.name, job.intended, job.sent, time.monotonic(), status, body))
        if close:
            sender.pool = None      # its connection_lost is not news any more
            sender.transport.close()
            self._free_slot()
        else:
            self._reuse(sender)

    def failed(self, sender, kind):
        """A broken answer: the request fails, the connection is dropped."""
        job = self._take(sender)
        sender.pool = None
        sender.transport.abort()
        if job is not None:
            self._failure(job, kind)
        self._free_slot()

    def lost(self, sender):
        """The server closed the connection (or it broke): idle, it just leaves the pool; with a
        request on it, that request is sent again once on a new connection if this one had
        served answers before (a keep-alive the server closed while idle), else it fails."""
        sender.pool = None
        if sender in self.idle:
            self.idle.remove(sender)
        job = self._take(sender)
        if job is None:
            self._free_slot()
        elif sender.answers and not job.retried and not sender.buffer:
            job.retried = True
            self._open(job)         # the same slot
        else:
            self._failure(job, "connection")
            self._free_slot()

    # -- inside ----------------------------------------------------------------------------------

    def _open(self, job):
        """A new connection for `job` (in a slot already counted)."""
        self._arm(job, None)
        self.loop.create_task(self._connect(job)).add_done_callback(_quiet)

    async def _connect(self, job):
        try:
            _, sender = await self.loop.create_connection(lambda: _Sender(self), self.host, self.port)
        except OSError:
            if job.timer is not None:       # else it timed out meanwhile, and is counted
                self._take_timer(job)
                self._failure(job, "connection")
                self._free_slot()
            return
        if job.timer is None:               # timed out while connecting: its slot is free already
            sender.pool = None
            sender.transport.close()
            return
        self._start(sender, job)

    def _start(self, sender, job):
        self._arm(job, sender)
        sender.send(job)

    def _arm(self, job, sender):
        """The job's time limit, counted from its first send (or connect), as the streams
        version's asyncio.timeout around the whole exchange, its retry included."""
        if job.sent is None:
            job.sent = time.monotonic()
        if job.timer is not None:
            job.timer.cancel()
        job.timer = self.loop.call_later(max(0.0, job.sent + self.timeout - time.monotonic()),
                                         self._timed_out, job, sender)

    def _timed_out(self, job, sender):
        job.timer = None
        if sender is not None and sender.job is job:
            sender.job = None
            sender.pool = None
            sender.transport.abort()
        self._failure(job, "client_timeout")
        self._free_slot()

    def _take(self, sender):
        """The sender's job, off it, its timer stopped (None if it had none)."""
        job, sender.job = sender.job, None
        if job is not None:
            self._take_timer(job)
        return job

    @staticmethod
    def _take_timer(job):
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None

    def _failure(self, job, kind):
        self._record(job, injector.Sample(job.name, job.intended, job.sent, time.monotonic(), 0, False, kind))

    def _record(self, job, sample):
        self.samples.append(sample)
        if self.progress:
            self.progress(1)
        if self.finished is not None and len(self.samples) >= self.expected and not self.finished.done():
            self.finished.set_result(None)

    def _reuse(self, sender):
        if self.waiting:
            self._start(sender, self.waiting.popleft())
        else:
            self.idle.append(sender)

    def _free_slot(self):
        """A connection is gone: the first waiting request opens the next one."""
        if self.waiting:
            self._open(self.waiting.popleft())
        else:
            self.slots -= 1


class ClosedLoop(Pool):
    """THREADS x REQUESTS requests of one kind, as the seed's injector: each of THREADS sends its
    REQUESTS one after the other, the next as soon as the last is answered, failed or timed
    out, on the connection that one freed (or a new one, if it closed)."""

    def __init__(self, loop, host, port, threads, requests, timeout, progress, name, request):
        super().__init__(loop, host, port, threads, timeout, progress)
        self.name, self.request = name, request
        self.left = [requests] * threads if requests > 0 else []

    def start(self):
        for thread in range(len(self.left)):
            self.left[thread] -= 1
            self.submit(time.monotonic(), self.name, self.request, thread)

    def _record(self, job, sample):
        super()._record(job, sample)
        thread = job.thread
        if self.left[thread] > 0:
            self.left[thread] -= 1
            # Not on an idle connection, one another thread is done with: on the one the last
            # request frees, which takes it from the queue next, or a new one if that never opened.
            self._place(_Job(time.monotonic(), self.name, self.request, thread))


def _quiet(task):
    """Retrieve a connect task's outcome (it handles its own errors; this is for cancellation)."""
    if not task.cancelled():
        task.exception()


async def schedule(url, plan, senders, progress, timeout, started):
    """The open loop over `plan` ((offset s, name, request bytes), sorted): see injector.run_schedule."""
    host, port = injector.address(url)
    loop = asyncio.get_running_loop()
    pool = Pool(loop, host, port, senders, timeout, progress)
    clock = injector.schedule_clock(loop)
    try:
        for offset, name, request in plan:
            intended = started + offset
            await clock.until(intended)
            pool.submit(intended, name, request)
    finally:
        clock.close()
    await pool.wait(len(plan))
    ended = time.monotonic()
    pool.close()
    return pool.samples, ended


async def closed(url, name, request, threads, requests, progress, timeout):
    """THREADS x REQUESTS requests, THREADS at a time: see injector.run_closed."""
    host, port = injector.address(url)
    pool = ClosedLoop(asyncio.get_running_loop(), host, port, threads, requests, timeout, progress, name, request)
    await pool.prepare(len(pool.left))
    started = time.monotonic()
    pool.start()
    await pool.wait(len(pool.left) * requests)
    ended = time.monotonic()
    pool.close()
    return pool.samples, started, ended
