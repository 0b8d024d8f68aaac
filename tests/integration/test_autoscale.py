"""Auto-scaling: the pool grows while jobs wait and shrinks back once idle, serving throughout."""

import concurrent.futures
import time

from support import deploy, http, invoke

SLEEPY = b"import sys, time\ntime.sleep(float(sys.stdin.read() or 0))\nprint('slept')\n"


def live_workers(stack):
    status, stats, _ = http("GET", stack.url + "/stats")
    assert status == 200, stats
    return [w for w in stats["workers"] if w["state"] in ("idle", "busy")]


def test_pool_grows_under_a_burst_and_shrinks_after_the_cooldown(start_stack):
    stack = start_stack(workers=1, strategy="FIFO",
                        extra_args=["--min-workers", "1", "--max-workers", "3", "--scale-cooldown", "1"])
    deploy(stack.url, "sleepy", "python", SLEEPY)
    assert len(live_workers(stack)) == 1

    peak = 1
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(invoke, stack.url, "sleepy", "0.7") for _ in range(12)]
        while not all(c.done() for c in calls):
            peak = max(peak, len(live_workers(stack)))
            time.sleep(0.1)
    assert [c.result()[0] for c in calls] == [200] * 12
    assert peak == 3  # grew to its ceiling while jobs waited, and no further

    deadline = time.monotonic() + 20
    while len(live_workers(stack)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(live_workers(stack)) == 1  # back to the floor once idle

    status, body, _ = invoke(stack.url, "sleepy", "0")
    assert status == 200 and body["output"] == "slept\n"
