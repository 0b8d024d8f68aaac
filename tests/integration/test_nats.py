"""The NATS executor on real processes: nats-server with JetStream, two worker hosts (each with
its own code cache and nothing but the NATS URL) and a stack started with `--executor nats`."""

import asyncio
import concurrent.futures
import os
import shutil
import signal
import tempfile
import time

import pytest
from support import EXAMPLES, deploy, http, invoke, started

from reference.executors.nats import executor as nats_executor
from reference.executors.nats.codecache import CodeServer
from reference.executors.nats.executor import SLOTS_PER_HOST, LocalCluster

SLOW_PY = b"import sys, time\ntime.sleep(0.4)\nprint('slow', sys.stdin.read())\n"
# Runs until the file named by its input exists (or 25 s pass): a worker held busy on demand.
GATE_PY = (b"import os, sys, time\ngate = sys.stdin.read()\nend = time.monotonic() + 25\n"
           b"while not os.path.exists(gate) and time.monotonic() < end:\n    time.sleep(0.05)\n"
           b"print('opened' if os.path.exists(gate) else 'timed out')\n")


def _need_nats():
    missing = []
    if nats_executor.nats_server_binary() is None:
        missing.append("nats-server (apt-get install nats-server)")
    try:
        import nats  # noqa: F401
    except ImportError:
        missing.append("nats-py (pip install nats-py)")
    if missing:
        reason = "NATS executor needs " + " and ".join(missing)
        if os.environ.get("FAAS_REQUIRE_TOOLCHAINS") == "1":
            pytest.fail(reason + " (required: FAAS_REQUIRE_TOOLCHAINS=1)")
        pytest.skip(reason)


def _start(cluster, strategy="RR"):
    return started(lambda: "host1:\n" + cluster.output("host1"),
                   strategy=strategy, workers=1, extra_args=cluster.extra_args)


@pytest.fixture(scope="module")
def nats_stack():
    """Two hosts of two workers each behind one RR stack, for the tests that leave it whole."""
    _need_nats()
    cluster = LocalCluster(hosts=2, workers=2)
    try:
        cluster.start()
        stack = _start(cluster)
    except BaseException:
        cluster.close()
        raise
    yield cluster, stack
    stack.close()
    cluster.close()


def _host(worker_id):
    return worker_id // SLOTS_PER_HOST


def _stats_when(url, ready, timeout=15.0):
    """GET /stats until `ready(stats)` holds (hosts report through heartbeats, every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, stats, _ = http("GET", url + "/stats")
        assert status == 200, stats
        if ready(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_invoke_runs_on_remote_workers_shown_in_stats(nats_stack):
    _, stack = nats_stack
    deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
    status, answer, _ = invoke(stack.url, "greet", "nats")
    assert status == 200, answer
    assert answer["output"] == "Hello, nats!\n"
    stats = _stats_when(stack.url, lambda s: len(s["workers"]) == 4)
    assert {w["host"] for w in stats["workers"]} == {"host1", "host2"}
    assert sorted(w["id"] for w in stats["workers"]) == sorted(b["id"] for b in stats["balancer_workers"])
    assert answer["worker"] in [w["id"] for w in stats["workers"]]


def test_round_robin_cycles_over_both_hosts(nats_stack):
    _, stack = nats_stack
    deploy(stack.url, "rr", "python", EXAMPLES / "greet.py")
    workers = []
    for i in range(8):
        status, answer, _ = invoke(stack.url, "rr", str(i))
        assert status == 200, answer
        workers.append(answer["worker"])
    # RR is cyclic over the four registered slots, two per host.
    assert len(set(workers[:4])) == 4
    assert workers[4:] == workers[:4]
    assert {_host(w) for w in workers} == {1, 2}


def test_each_host_fetches_code_once_then_hits_its_cache(nats_stack):
    cluster, stack = nats_stack
    meta = deploy(stack.url, "cached", "python", EXAMPLES / "greet.py")
    digest = CodeServer().digest(os.path.join(stack.functions_dir, meta["id"]))
    for i in range(8):  # RR over four slots: each host runs four
        status, answer, _ = invoke(stack.url, "cached", "x")
        assert status == 200, answer
    for host in ("host1", "host2"):
        assert cluster.output(host).count("fetched code %s" % digest[:12]) == 1
        # The host's own copy, named by the digest, is what every later call ran.
        assert sorted(os.listdir(os.path.join(cluster.dir, "cache-" + host, digest))) == ["code.py", "metadata.json"]
    stats = _stats_when(stack.url, lambda s: all(w["code_hits"] >= 3 for w in s["workers"]))
    assert all(w["code_hits"] >= 3 for w in stats["workers"]), stats


def test_compiled_code_travels_with_its_module(nats_stack):
    from needs import need_toolchain

    need_toolchain("c")
    cluster, stack = nats_stack
    deploy(stack.url, "hello", "c", EXAMPLES / "hello.c")
    for _ in range(4):
        status, answer, _ = invoke(stack.url, "hello", "x")
        assert status == 200, answer
        assert answer["output"].startswith("Hello from FAAS!")
    for host in ("host1", "host2"):
        cache = os.path.join(cluster.dir, "cache-" + host)
        files = [sorted(os.listdir(os.path.join(cache, d))) for d in os.listdir(cache) if not d.startswith(".")]
        assert ["code.c", "code.cwasm", "code.wasm", "metadata.json"] in files


def _consumers(url):
    """Consumer name -> messages it has delivered, in the jobs stream."""
    import nats

    async def ask():
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            return {c.name: c.delivered.consumer_seq for c in await js.consumers_info(nats_executor.STREAM)}
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_fifo_jobs_go_through_the_shared_queue_to_idle_hosts_only():
    _need_nats()
    gate_dir = tempfile.mkdtemp(prefix="minifaas-gate-")
    os.chmod(gate_dir, 0o755)  # the function may run as the sandbox user
    gate = os.path.join(gate_dir, "open")
    with LocalCluster(hosts=2, workers=1) as cluster:
        stack = _start(cluster, strategy="FIFO")
        try:
            deploy(stack.url, "gate", "python", GATE_PY, timeout_ms=30000)
            deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
            _stats_when(stack.url, lambda s: len(s["workers"]) == 2)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                held = pool.submit(invoke, stack.url, "gate", gate)
                stats = _stats_when(stack.url, lambda s: any(w["state"] == "busy" for w in s["workers"]))
                busy = [w["host"] for w in stats["workers"] if w["state"] == "busy"]
                assert len(busy) == 1, stats
                free = ({"host1", "host2"} - set(busy)).pop()
                host_of = {w["id"]: w["host"] for w in stats["workers"]}
                # The busy host's only worker is running the gate: it pulls nothing, so every
                # call goes to the other host.
                for i in range(4):
                    status, answer, _ = invoke(stack.url, "greet", str(i))
                    assert status == 200, answer
                    assert answer["output"] == "Hello, %s!\n" % i
                    assert host_of[answer["worker"]] == free, answer
                open(gate, "w").close()
                status, answer, _ = held.result()
            assert status == 200, answer
            assert answer["output"] == "opened\n"
            assert host_of[answer["worker"]] == busy[0], answer
            # All five went through the shared pull consumer; the hosts' own subjects carried none.
            delivered = _consumers(cluster.url)
            assert delivered[nats_executor.SHARED_CONSUMER] >= 5, delivered
            assert delivered["host-host1"] == delivered["host-host2"] == 0, delivered
        finally:
            stack.close()
            shutil.rmtree(gate_dir, ignore_errors=True)


@pytest.mark.parametrize("strategy", ["RR", "FIFO"])
def test_host_killed_mid_load_loses_nothing_and_nats_restart_is_survived(strategy):
    _need_nats()
    with LocalCluster(hosts=2, workers=2) as cluster:
        stack = _start(cluster, strategy=strategy)
        try:
            deploy(stack.url, "slow", "python", SLOW_PY)
            n = 24
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                calls = [pool.submit(invoke, stack.url, "slow", str(i)) for i in range(n)]
                # Kill host1 (and its workers) once the load is under way: it holds queued and
                # running jobs that it never answers.
                next(concurrent.futures.as_completed(calls))
                os.killpg(cluster.hosts["host1"].pid, signal.SIGKILL)
                answers = [c.result() for c in calls]
            for i, (status, answer, _) in enumerate(answers):
                assert status == 200, answer
                assert answer["output"] == "slow %d\n" % i
            if strategy == "RR":  # under FIFO JetStream itself hands the dead host's jobs out again
                assert "unanswered jobs scheduled again" in stack.output()
            stats = _stats_when(stack.url, lambda s: {w["host"] for w in s["workers"]} == {"host2"})
            assert {w["host"] for w in stats["workers"]} == {"host2"}
            assert stats["pending"] == 0

            cluster.restart_nats()
            deadline = time.monotonic() + 30
            while True:
                status, answer, _ = invoke(stack.url, "slow", "again")
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status == 200, answer
            assert answer["output"] == "slow again\n"
        finally:
            stack.close()
