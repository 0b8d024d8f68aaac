"""The NATS executor on real processes: nats-server with JetStream, two worker hosts (each with
its own code cache and nothing but the NATS URL) and a stack started with `--executor nats`."""

import concurrent.futures
import os
import signal
import socket
import time

import pytest
from nats_support import (SLEEP_PY, SLOW_PY, client, cluster_behind_stack, need_nats, run, start_stack, stats_when,
                          stream_state, timed_load)
from support import EXAMPLES, deploy, invoke

from reference.executors.nats import executor as nats_executor
from reference.executors.nats.codecache import CodeServer
from reference.executors.nats.executor import SLOTS_PER_HOST, LocalCluster


@pytest.fixture(scope="module")
def nats_stack():
    """Two hosts of two workers each behind one RR stack, for the tests that leave it whole."""
    with cluster_behind_stack(2, 2) as both:
        yield both


def _host(worker_id):
    return worker_id // SLOTS_PER_HOST


def test_invoke_runs_on_remote_workers_shown_in_stats(nats_stack):
    _, stack = nats_stack
    deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
    status, answer, _ = invoke(stack.url, "greet", "nats")
    assert status == 200, answer
    assert answer["output"] == "Hello, nats!\n"
    stats = stats_when(stack.url, lambda s: len(s["workers"]) == 4)
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
    stats = stats_when(stack.url, lambda s: all(w["code_hits"] >= 3 for w in s["workers"]))
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


def _consumers(cluster):
    """Consumer name -> messages it has delivered, in the jobs stream (asked as the platform)."""
    from nats_support import client

    async def ask():
        nc = await client(cluster.url, "platform", cluster.passwords["platform"])
        try:
            js = nc.jetstream()
            return {c.name: c.delivered.consumer_seq for c in await js.consumers_info(nats_executor.STREAM)}
        finally:
            await nc.close()

    return run(ask())


def test_fifo_is_first_free_slot_anywhere_and_a_busy_host_holds_no_job():
    """Under FIFO a short call never waits behind a long one while a slot is free elsewhere:
    long calls hold host slots for 4 s; every short call, sent meanwhile, is answered well
    before that (it would take the rest of 4 s if it sat in a busy host's buffer)."""
    need_nats()
    with LocalCluster(hosts=2, workers=2) as cluster:
        stack = start_stack(cluster, strategy="FIFO")
        try:
            deploy(stack.url, "sleep", "python", SLEEP_PY, timeout_ms=20000)
            deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
            stats_when(stack.url, lambda s: len(s["workers"]) == 4)
            invoke(stack.url, "greet", "warm")  # both hosts may fetch code: not timed below
            for _ in range(2):
                invoke(stack.url, "greet", "warm")
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                longs = [pool.submit(invoke, stack.url, "sleep", "4") for _ in range(3)]
                # (A heartbeat may still show a warm-up call's slot busy: wait for the balancer.)
                stats = stats_when(stack.url, lambda s: sum(w["state"] == "busy" for w in s["workers"]) == 3
                                   and s["pending"] == 3)
                # One slot is free: every short call must go there, one after the other.
                shorts = timed_load(stack.url, "greet", [str(i) for i in range(10)], threads=1)
                free = shorts[0][2].get("worker")
                for data, status, answer, seconds in shorts:
                    assert status == 200, answer
                    assert answer["output"] == "Hello, %s!\n" % data
                    assert answer["worker"] == free, (shorts, stats)
                    assert seconds < 2.0, shorts   # behind a long call it would take ~4 s
                held = set()
                for f in longs:
                    status, answer, _ = f.result()
                    assert status == 200 and answer["output"] == "slept 4\n", answer
                    held.add(answer["worker"])
                assert len(held) == 3 and free not in held, (held, free)
            # All went through the shared pull consumer; the hosts' own subjects carried none,
            # and every answered job left the work queue.
            delivered = _consumers(cluster)
            assert delivered[nats_executor.SHARED_CONSUMER] >= 16, delivered
            assert delivered["host-host1"] == delivered["host-host2"] == 0, delivered
            assert stream_state(cluster)[0] == 0
        finally:
            stack.close()


@pytest.mark.parametrize("strategy", ["RR", "FIFO"])
def test_host_killed_mid_load_loses_nothing_and_nats_restart_is_survived(strategy):
    need_nats()
    with LocalCluster(hosts=2, workers=2) as cluster:
        stack = start_stack(cluster, strategy=strategy)
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
                # On a failure, what the surviving host logged (a runtime's traceback) says why.
                assert status == 200, (answer, cluster.output("host2")[-6000:])
                assert answer["output"] == "slow %d\n" % i
            # How the dead host's jobs came back (its loss noticed by heartbeat, or a job's own
            # deadline, or under FIFO JetStream's redelivery) depends on the machine's load; that
            # every call got its own answer is what must hold.
            stats = stats_when(stack.url, lambda s: {w["host"] for w in s["workers"]} == {"host2"})
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


@pytest.mark.parametrize("which", ["port", "cluster_port", "http_port"])
def test_a_port_taken_after_it_was_chosen_moves_the_cluster_to_new_ports(which):
    """A squatter listens on one of a node's ports between free_port's check and nats-server's
    own bind (in CI something did): the cluster starts on fresh ports and works."""
    need_nats()
    cluster = LocalCluster(hosts=0, nodes=3)
    taken = getattr(cluster.nodes[1], which)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    try:
        with cluster:
            assert taken not in [getattr(n, which) for n in cluster.nodes]
            assert all(n.proc.poll() is None for n in cluster.nodes)
            ports = [n.port for n in cluster.nodes] + [n.cluster_port for n in cluster.nodes]
            assert len(set(ports)) == len(ports)
            run(_platform_client_publishes(cluster))
    finally:
        squatter.close()


def test_passwords_that_look_like_dates_to_nats_servers_parser_still_start_a_cluster():
    """Random passwords (token_urlsafe) sometimes begin "5-...": unquoted in the config, the
    one of the routes was read as an ISO 8601 date and nats-server refused to start (seen in
    CI: 'All ISO8601 dates must be in full Zulu form'). Every password here begins so."""
    need_nats()
    cluster = LocalCluster(hosts=0, nodes=2)
    cluster.route_password = "5-" + cluster.route_password
    cluster.passwords = {user: "2026-" + password for user, password in cluster.passwords.items()}
    with cluster:
        assert all(n.proc.poll() is None for n in cluster.nodes)
        run(_platform_client_publishes(cluster))


async def _platform_client_publishes(cluster):
    nc = await client(cluster.url, "platform", cluster.passwords["platform"])
    try:
        await nc.flush(timeout=5)
        assert nc.is_connected
    finally:
        await nc.close()


def test_a_server_that_is_not_the_node_asked_for_is_refused_and_stopped(tmp_path):
    """start_nats waits for the node to greet as itself; something else on the port, or a
    server by another name, is an error, and the process it started is not left running."""
    need_nats()
    node = nats_executor.Node("named", nats_executor.free_port(), 0)
    with pytest.raises(nats_executor.Unavailable, match="did not answer as itself"):
        nats_executor.start_nats(str(tmp_path), node, "server_name: other\nlisten: 127.0.0.1:%d\n" % node.port,
                                 ready_timeout=3)
    assert node.proc.poll() is not None
