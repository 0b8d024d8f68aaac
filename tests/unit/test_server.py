"""The server in-process: a real Server on a real UNIX socket, with a fake balancer (an asyncio
UNIX socket server speaking the frames) and a fake executor (the Executor protocol), so each
path of the job flow is driven on purpose: dispatch by op, the answer of each failure,
overload, the balancer going away, workers that cannot boot."""

import asyncio
import contextlib
import dataclasses
import inspect
import os
import shutil
import socket
import tempfile
import threading

import pytest

from reference.config import Limits, ServerSettings
from reference.executors import Executor, Scalable
from reference.executors.local import LocalWorkers
from reference.gateway.client import ServerClient
from reference.server.autoscaler import Autoscaler
from reference.server.server import Server, answer_of
from reference.wire import framing, ops
from reference.wire.errors import Timeout, WorkerLost
from reference.wire.jobs import Outcome

DEADLINE_S = 10.0   # only so that a missing event fails the test instead of hanging it


async def wait_for(predicate, what, *tasks):
    """Until predicate() is true; fails with `what` at the deadline, or at once with the error
    of one of `tasks` that ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not predicate():
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("%s: the server stopped first" % what)
        if loop.time() > deadline:
            raise AssertionError("never happened: %s" % what)
        await asyncio.sleep(0.005)


class FakeBalancer:
    """A balancer on a real socket: records every frame, assigns each submitted job to the
    first registered worker, or holds the jobs when `hold` is set."""

    def __init__(self, path):
        self.path = path
        self.received = []
        self.workers = []
        self.hold = False
        self.held = []
        self.writers = []
        self.listener = None

    async def start(self):
        self.listener = await asyncio.start_unix_server(self.handle, self.path)

    async def handle(self, reader, writer):
        self.writers.append(writer)
        frames = framing.AsyncFrameReader(reader)
        try:
            while True:
                header, _ = await frames.read_frame()
                self.received.append(header)
                getattr(self, "op_" + header["op"])(header, writer)
        except (EOFError, ConnectionError):
            pass

    def ops_received(self, op):
        return [h for h in self.received if h["op"] == op]

    def op_register(self, header, writer):
        self.workers += [w["id"] for w in header["workers"]]

    def op_unregister(self, header, writer):
        self.workers = [w for w in self.workers if w not in header["workers"]]

    def op_submit(self, header, writer):
        if not self.workers:
            writer.write(framing.encode(ops.reject(header["job"], "no worker available")))
        elif self.hold:
            self.held.append(header["job"])
        else:
            writer.write(framing.encode(ops.assign(header["job"], self.workers[0])))

    def op_done(self, header, writer):
        pass

    def op_stats(self, header, writer):
        writer.write(framing.encode(ops.balancer_stats(header["req"], "FAKE", len(self.held), [])))

    def drop(self):
        """The balancer goes away: its connections close, and what it held is forgotten."""
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        self.workers.clear()
        self.held.clear()

    async def close(self):
        self.drop()
        self.listener.close()
        await self.listener.wait_closed()


class FakeExecutor:
    """The Executor protocol with workers that are only ids: every worker is up once started;
    jobs wait in `jobs` (wid, job, future) until the test settles them, or settle at once
    through `settle(job, future)` when one is given."""

    def __init__(self, size, on_up, on_down, on_broken, settle=None):
        self.size = size
        self.on_up, self.on_down, self.on_broken = on_up, on_down, on_broken
        self.settle = settle
        self.up = []
        self.jobs = []
        self.stopped = False

    async def start(self):
        for wid in range(self.size):
            self.up.append(wid)
            self.on_up(wid)

    def submit(self, wid, job):
        future = asyncio.get_running_loop().create_future()
        self.jobs.append((wid, job, future))
        if self.settle is not None:
            self.settle(job, future)
        return future

    def alive(self):
        return list(self.up)

    def snapshot(self):
        return [{"id": w, "pid": 1000 + w, "state": "idle", "jobs": 0, "queue": 0} for w in self.up]

    def closing(self):
        self.closed = True

    async def stop(self):
        self.stopped = True

    # -- what a real pool does on its own, on the test's cue --------------------------------

    def lose(self, wid, orphans=()):
        self.up.remove(wid)
        self.on_down(wid, list(orphans))

    def cannot_boot(self, reason):
        self.up.clear()
        self.on_broken(reason)


class Gateway:
    """The gateway's end of the server socket: requests with ids, answers matched by id."""

    def __init__(self, reader, writer):
        self.frames = framing.AsyncFrameReader(reader)
        self.writer = writer
        self.answers = {}
        self.next_req = 0

    @classmethod
    async def connect(cls, path):
        return cls(*await asyncio.open_unix_connection(path))

    def send(self, header, body=b""):
        self.next_req += 1
        self.writer.write(framing.encode(dict(header, req=self.next_req), body))
        return self.next_req

    async def answer(self, req):
        async def read():
            while req not in self.answers:
                header, body = await self.frames.read_frame()
                self.answers[header["req"]] = (header, body)
            return self.answers.pop(req)
        return await asyncio.wait_for(read(), DEADLINE_S)

    async def ask(self, header, body=b""):
        return await self.answer(self.send(header, body))

    def close(self):
        self.writer.close()


def invoke_header(timeout_ms=1000):
    return ops.invoke("hello_1", "/nowhere/hello_1", "python", timeout_ms, 64, 4096)


@dataclasses.dataclass
class Rig:
    server: Server
    executor: FakeExecutor
    balancer: FakeBalancer
    gateway: Gateway
    task: asyncio.Task

    async def wait_for(self, predicate, what):
        await wait_for(predicate, what, self.task)


@contextlib.asynccontextmanager
async def rig(workers=2, max_queue=64, settle=None):
    # A short directory: a UNIX socket path must fit in 108 bytes.
    directory = tempfile.mkdtemp(prefix="mf-server-", dir="/tmp")
    settings = ServerSettings(server_sock=os.path.join(directory, "server.sock"),
                              lb_sock=os.path.join(directory, "lb.sock"), workers=workers, max_queue=max_queue)
    balancer = FakeBalancer(settings.lb_sock)
    await balancer.start()
    made = []

    def executor_factory(settings, on_up, on_down, on_broken):
        made.append(FakeExecutor(settings.workers, on_up, on_down, on_broken, settle))
        return made[0], None

    server = Server(settings, executor_factory=executor_factory)
    task = asyncio.get_running_loop().create_task(server.run())
    gateway = None
    try:
        await wait_for(lambda: sorted(balancer.workers) == list(range(workers)) and os.path.exists(settings.server_sock),
                       "the server registers its workers and listens", task)
        gateway = await Gateway.connect(settings.server_sock)
        yield Rig(server, made[0], balancer, gateway, task)
    finally:
        if gateway is not None:
            gateway.close()
        server.stopping.set()
        await asyncio.wait_for(task, DEADLINE_S)
        await balancer.close()
        shutil.rmtree(directory, ignore_errors=True)


def run(scenario, **kwargs):
    async def main():
        async with rig(**kwargs) as r:
            await scenario(r)
    asyncio.run(main())


def fault(header):
    return header.get("fault")


# -- dispatch ---------------------------------------------------------------------------------

def test_an_invocation_goes_through_the_balancer_to_the_worker_it_names():
    def settle(job, future):
        future.set_result(Outcome(stdout=b"out:" + job.input, stderr=b"err", worker=0))

    async def scenario(r):
        header, body = await r.gateway.ask(invoke_header(), b"data")
        assert fault(header) is None, header
        outcome = Outcome.from_wire(header, body)
        assert (outcome.stdout, outcome.stderr) == (b"out:data", b"err")
        assert outcome.queue_ms >= 0
        submitted = r.balancer.ops_received("submit")
        assert [s["fn"] for s in submitted] == ["hello_1"]
        (wid, job, _), = r.executor.jobs
        assert wid == 0 and job.job_id == submitted[0]["job"]
        assert (job.fn_dir, job.timeout_ms, job.memory_mb, job.output_limit) == ("/nowhere/hello_1", 1000, 64, 4096)
        # The worker's slot is given back once the job is settled.
        await r.wait_for(lambda: r.balancer.ops_received("done"), "done reaches the balancer")
        assert r.balancer.ops_received("done") == [ops.done(job.job_id, 0)]
        assert r.server.in_flight == {}

    run(scenario, settle=settle)


def test_health_stats_and_an_unknown_op_are_answered_by_name():
    async def scenario(r):
        health, _ = await r.gateway.ask(ops.health())
        assert health["server"] is True and health["balancer"] is True
        assert health["workers"] == 2 and "broken" not in health
        stats, _ = await r.gateway.ask(ops.stats())
        assert stats["strategy"] == "FAKE" and [w["id"] for w in stats["workers"]] == [0, 1]
        answer, _ = await r.gateway.ask({"op": "frobnicate"})
        assert fault(answer) == "protocol" and "frobnicate" in answer["message"]

    run(scenario)


# -- answers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("error, kind", [
    (Timeout("function exceeded its 1000 ms time limit"), "timeout"),
    (WorkerLost("worker 0 died while running the invocation"), "worker_lost"),
    (RuntimeError("the executor's own bug"), "unavailable"),
])
def test_a_job_that_could_not_run_is_answered_with_its_kind(error, kind):
    def settle(job, future):
        future.set_exception(error)

    async def scenario(r):
        header, body = await r.gateway.ask(invoke_header())
        assert fault(header) == kind and str(error) in header["message"], header
        assert body == b""

    run(scenario, settle=settle)


def test_answer_of_maps_what_the_future_held_without_touching_it():
    outcome = Outcome(exit_code=3, stdout=b"o", stderr=b"e", queue_ms=0.0)
    header, body = answer_of(outcome, 12.34567)
    assert header["queue_ms"] == 12.346 and header["exit_code"] == 3 and body == b"oe"
    assert outcome.queue_ms == 0.0
    assert answer_of(Timeout("too slow"), 1.0) == ({"fault": "timeout", "message": "too slow", "extra": {}}, b"")
    header, _ = answer_of(KeyError("x"), 1.0)
    assert header["fault"] == "unavailable" and "executor failed" in header["message"]


def test_overload_answers_429_with_retry_after_and_takes_calls_again_once_answered():
    async def scenario(r):
        first = [r.gateway.send(invoke_header()) for _ in range(2)]
        await r.wait_for(lambda: len(r.executor.jobs) == 2, "both calls reach a worker")
        header, _ = await r.gateway.ask(invoke_header())
        assert fault(header) == "overloaded" and header["extra"]["retry_after"] == 1, header
        for _, _, future in r.executor.jobs:
            future.set_result(Outcome(stdout=b"ok"))
        for req in first:
            assert fault((await r.gateway.answer(req))[0]) is None
        r.executor.settle = lambda job, future: future.set_result(Outcome(stdout=b"again"))
        header, body = await r.gateway.ask(invoke_header())
        assert fault(header) is None and body == b"again"

    run(scenario, max_queue=2)


# -- the balancer ---------------------------------------------------------------------------

def test_losing_the_balancer_answers_the_calls_it_held_and_it_is_rejoined():
    async def scenario(r):
        r.balancer.hold = True
        reqs = [r.gateway.send(invoke_header()) for _ in range(3)]
        await r.wait_for(lambda: len(r.balancer.held) == 3, "the balancer holds three jobs")
        registrations = len(r.balancer.ops_received("register"))
        r.balancer.drop()
        for req in reqs:
            header, _ = await r.gateway.answer(req)
            assert fault(header) == "unavailable" and "balancer" in header["message"], header
        assert r.server.in_flight == {} and r.server.unassigned == set()
        assert r.executor.jobs == []  # none of them ran
        # The server connects again and registers its workers anew.
        await r.wait_for(lambda: len(r.balancer.ops_received("register")) > registrations and
                         sorted(r.balancer.workers) == [0, 1], "the workers are registered again")
        r.balancer.hold = False
        r.executor.settle = lambda job, future: future.set_result(Outcome(stdout=b"back"))
        header, body = await r.gateway.ask(invoke_header())
        assert fault(header) is None and body == b"back"

    run(scenario)


def test_a_rejected_job_is_answered_503_with_the_balancers_reason():
    async def scenario(r):
        r.balancer.workers.clear()  # the balancer forgot them: it rejects
        header, _ = await r.gateway.ask(invoke_header())
        assert fault(header) == "unavailable" and header["message"] == "no worker available"

    run(scenario)


# -- workers ----------------------------------------------------------------------------------

def test_jobs_waiting_for_a_lost_worker_are_scheduled_again_and_it_is_unregistered():
    async def scenario(r):
        req = r.gateway.send(invoke_header())
        await r.wait_for(lambda: r.executor.jobs, "the job reaches worker 0")
        wid, job, future = r.executor.jobs.pop()
        assert wid == 0
        r.executor.lose(0, orphans=[(job, future)])
        await r.wait_for(lambda: r.executor.jobs, "the job is scheduled again")
        (wid, again, future), = r.executor.jobs
        assert wid == 1 and again is job
        future.set_result(Outcome(stdout=b"elsewhere"))
        header, body = await r.gateway.answer(req)
        assert fault(header) is None and body == b"elsewhere"
        assert ops.unregister([0]) in r.balancer.received

    run(scenario)


def test_workers_that_cannot_boot_are_reported_by_health_and_invoke():
    reason = "worker 0 could not boot: RuntimeError: no runtimes here"

    async def scenario(r):
        r.executor.cannot_boot(reason)
        health, _ = await r.gateway.ask(ops.health())
        assert health["workers"] == 0 and health["broken"] == reason
        header, _ = await r.gateway.ask(invoke_header())
        assert fault(header) == "unavailable" and reason in header["message"], header
        assert r.balancer.ops_received("submit") == []

    run(scenario)


def test_workers_that_cannot_boot_are_what_invoke_says_even_while_the_balancer_is_away():
    """The boot error is for good (the server starts no more workers), a balancer that is away
    comes back: a call refused with both gets the one that tells the operator what to fix. The
    stack's own test hit the other order when its call came before the balancer's link."""
    reason = "worker 0 could not boot: RuntimeError: no runtimes here"

    async def scenario(r):
        r.executor.cannot_boot(reason)
        r.balancer.listener.close()
        r.balancer.drop()

        async def balancer_away():
            health, _ = await r.gateway.ask(ops.health())
            return not health["balancer"]
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not await balancer_away():
            assert asyncio.get_running_loop().time() < deadline, "the server never saw the balancer go"
            await asyncio.sleep(0.01)
        header, _ = await r.gateway.ask(invoke_header())
        assert fault(header) == "unavailable" and reason in header["message"], header

    run(scenario)


def test_stopping_answers_every_call_in_flight_and_stops_the_executor():
    async def scenario():
        async with rig() as r:
            req = r.gateway.send(invoke_header())
            await r.wait_for(lambda: r.executor.jobs, "the job reaches a worker")
            r.server.stopping.set()
            header, _ = await r.gateway.answer(req)
            assert fault(header) == "unavailable" and "shutting down" in header["message"]
            await asyncio.wait_for(r.task, DEADLINE_S)
            assert r.executor.stopped
            assert not os.path.exists(r.server.server_sock)

    asyncio.run(scenario())


# -- the executor seam ---------------------------------------------------------------------

def protocol_members(protocol):
    """The methods and properties a protocol declares itself (not those it inherits)."""
    return {name: member for name, member in vars(protocol).items()
            if not name.startswith("_") and (callable(member) or isinstance(member, property))}


def executors():
    from reference.executors.nats.executor import NatsWorkers
    return [LocalWorkers, NatsWorkers, FakeExecutor]


@pytest.mark.parametrize("executor", executors(), ids=lambda cls: cls.__name__)
def test_each_executor_has_what_the_server_uses_async_where_the_protocol_says(executor):
    for name, member in protocol_members(Executor).items():
        if isinstance(member, property):
            continue  # an attribute or a property: checked on an instance below for LocalWorkers
        mine = getattr(executor, name, None)
        assert callable(mine), "%s lacks %s" % (executor.__name__, name)
        assert inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(member), (executor.__name__, name)


def test_the_local_pool_is_scalable():
    pool = LocalWorkers(2, on_up=None, on_down=None, min_size=1, max_size=3)
    assert (pool.size, pool.min_size, pool.max_size) == (2, 1, 3)
    for name, member in protocol_members(Scalable).items():
        assert callable(getattr(pool, name)) and not inspect.iscoroutinefunction(member), name


# -- auto-scaling -----------------------------------------------------------------------------

class FakePool:
    """The Scalable protocol's counting part."""

    min_size, max_size = 1, 3

    def __init__(self, states, waiting=0):
        self.states, self.queued = states, waiting
        self.grown = self.retired = 0

    def waiting(self):
        return self.queued

    def snapshot(self):
        return [{"id": i, "state": s} for i, s in enumerate(self.states)]

    def grow(self):
        self.grown += 1
        return True

    def retire_idle(self, cooldown_s):
        self.retired += 1
        return True


@pytest.mark.parametrize("states, unassigned, waiting, step", [
    (["busy", "busy"], 1, 0, "grow"),       # jobs wait and every worker is busy
    (["busy", "busy", "dead"], 0, 2, "grow"),
    (["busy", "idle"], 3, 0, None),         # an idle worker will take them
    (["idle", "idle"], 0, 0, "retire"),     # nothing waits
])
def test_the_autoscaler_grows_while_jobs_wait_on_busy_workers_and_retires_when_none_wait(
        states, unassigned, waiting, step):
    pool = FakePool(states, waiting)
    assert Autoscaler(pool, lambda: unassigned, cooldown_s=5.0).step() == step
    assert (pool.grown, pool.retired) == ({"grow": (1, 0), "retire": (0, 1), None: (0, 0)}[step])


# -- the gateway's client -------------------------------------------------------------------

def test_the_gateway_client_sends_the_output_cap_of_its_limits():
    directory = tempfile.mkdtemp(prefix="mf-client-", dir="/tmp")
    path = os.path.join(directory, "server.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    seen = []

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            header, body = framing.FrameReader(conn).read_frame()
            seen.append((header, body))
            answer, out = Outcome(stdout=b"fine").to_wire()
            framing.send_all(conn, framing.encode(dict(answer, req=header["req"]), out))

    thread = threading.Thread(target=serve_one)
    thread.start()
    client = ServerClient(path, Limits(output_bytes=777, timeout_ms=1500))
    try:
        meta = {"id": "f_1", "dir": "/x/f_1", "lang": "python", "memory_mb": 64}
        outcome = client.invoke(meta, b"in")
    finally:
        client.close()
        thread.join(DEADLINE_S)
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert outcome.stdout == b"fine"
    (header, body), = seen
    assert header["op"] == "invoke" and body == b"in"
    assert (header["output_limit"], header["timeout_ms"], header["memory_mb"]) == (777, 1500, 64)
