"""What the NATS tests share: skipping without NATS, a stack on a LocalCluster, polling /stats,
a raw NATS client (hostile or ours) and a load whose every answer is checked against its input."""

import asyncio
import concurrent.futures
import contextlib
import time

from needs import missing
from support import EXAMPLES, deploy, http, invoke, started

from reference.executors.nats import executor as nats_executor

SLOW_PY = b"import sys, time\ntime.sleep(0.4)\nprint('slow', sys.stdin.read())\n"
# Sleeps as many seconds as its input says, then echoes it: a worker held busy for a while.
SLEEP_PY = b"import sys, time\nt = sys.stdin.read()\ntime.sleep(float(t))\nprint('slept', t)\n"


def need_nats():
    lacking = []
    if nats_executor.nats_server_binary() is None:
        lacking.append("nats-server (apt-get install nats-server)")
    try:
        import nats  # noqa: F401
    except ImportError:
        lacking.append("nats-py (pip install nats-py)")
    if lacking:
        missing("NATS executor needs " + " and ".join(lacking))


def start_stack(cluster, strategy="RR"):
    """`minifaas up` on the cluster (its --nats-creds file; no secret on its command line)."""
    def why():
        return "\n".join("%s:\n%s" % (h, cluster.output(h)[-3000:]) for h in cluster.hosts)
    return started(why, strategy=strategy, workers=1, extra_args=cluster.extra_args)


def stats_when(url, ready, timeout=15.0):
    """GET /stats until `ready(stats)` holds (hosts report through heartbeats, every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, stats, _ = http("GET", url + "/stats")
        assert status == 200, stats
        if ready(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def hosts_up(url, hosts, timeout=15.0):
    stats = stats_when(url, lambda s: {w["host"] for w in s["workers"]} == set(hosts), timeout)
    assert {w["host"] for w in stats["workers"]} == set(hosts), stats
    return stats


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def client(url, user=None, password=None, errors=None):
    """A raw nats-py connection (no reconnects); protocol errors (permission violations) are
    appended to `errors`."""
    import nats

    async def error_cb(exc):
        if errors is not None:
            errors.append(str(exc))

    kwargs = {"user": user, "password": password} if user else {}
    return await nats.connect(servers=url.split(","), allow_reconnect=False, connect_timeout=3,
                              max_reconnect_attempts=0, error_cb=error_cb, **kwargs)


def stream_state(cluster):
    """(messages in the jobs stream, its replicas), asked as the platform."""
    async def ask():
        nc = await client(cluster.url, "platform", cluster.passwords["platform"])
        try:
            info = await nc.jetstream().stream_info(nats_executor.STREAM)
            return info.state.messages, info.config.num_replicas
        finally:
            await nc.close()
    return run(ask())


def timed_load(url, fn, inputs, threads=8):
    """Invoke fn once per input from `threads` threads: [(input, status, answer, seconds)]."""
    def one(data):
        start = time.monotonic()
        status, answer, _ = invoke(url, fn, data)
        return data, status, answer, time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, inputs))


def assert_all_answered(results, expected, limit_s):
    """Every call 200 with the output its own input gives, none slower than limit_s."""
    for data, status, answer, seconds in results:
        assert status == 200, (data, answer)
        assert answer["output"] == expected(data), (data, answer)
        assert seconds < limit_s, (data, seconds)


@contextlib.contextmanager
def cluster_behind_stack(hosts, workers, **cluster_options):
    """(cluster, stack): a LocalCluster of `hosts` hosts of `workers` workers each behind one RR
    stack (the test skips without nats-server); both stopped when the block ends."""
    need_nats()
    cluster = nats_executor.LocalCluster(hosts=hosts, workers=workers, **cluster_options)
    try:
        cluster.start()
        stack = start_stack(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        yield cluster, stack
    finally:
        stack.close()
        cluster.close()


def two_hosts_behind_rr(**cluster_options):
    """A generator for a module fixture: a LocalCluster of two hosts of one worker each behind
    one RR stack, greet and slow deployed, both hosts up; stopped when the generator closes."""
    with cluster_behind_stack(2, 1, **cluster_options) as (cluster, stack):
        deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
        deploy(stack.url, "slow", "python", SLOW_PY)
        hosts_up(stack.url, ["host1", "host2"])
        yield cluster, stack
