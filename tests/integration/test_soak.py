"""Soak: a few thousand invocations with workers killed and runaway functions mixed in.

Every request must get exactly one answer, and every successful answer must be the answer to
that request (each input carries a token the function echoes back), so nothing is lost,
duplicated or delivered to the wrong caller.
"""

import concurrent.futures
import os
import random
import signal
import threading
import time

from support import deploy, http, invoke

ECHO = b"import sys\nsys.stdout.write('echo:' + sys.stdin.read())\n"
RUNAWAY = b"while True:\n    pass\n"

CALLS = 1500
THREADS = 8


def test_every_call_gets_exactly_its_own_answer_under_faults(start_stack):
    stack = start_stack(workers=3, strategy="FIFO")
    deploy(stack.url, "echo", "python", ECHO)
    deploy(stack.url, "runaway", "python", RUNAWAY, timeout_ms=300)

    stop_killing = threading.Event()
    kills = []

    def killer():
        rng = random.Random(7)
        while not stop_killing.wait(rng.uniform(0.5, 1.5)):
            status, stats, _ = http("GET", stack.url + "/stats")
            busy = [w for w in stats.get("workers", []) if w["state"] == "busy"] if status == 200 else []
            if busy:
                victim = rng.choice(busy)
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                    kills.append(victim["pid"])
                except ProcessLookupError:
                    pass

    def call(i):
        if i % 100 == 0:
            return i, invoke(stack.url, "runaway", "")
        return i, invoke(stack.url, "echo", "token-%d" % i)

    killer_thread = threading.Thread(target=killer)
    killer_thread.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            answers = dict(pool.map(call, range(CALLS)))
    finally:
        stop_killing.set()
        killer_thread.join()

    assert sorted(answers) == list(range(CALLS))  # one answer per request, none missing
    by_status = {}
    for i, (status, body, _) in answers.items():
        by_status.setdefault(status, []).append(i)
        assert isinstance(body, dict) and "ok" in body, (i, status, body)
        if i % 100 == 0:
            assert status in (504, 502), (i, status, body)  # runaway: its time limit, or its worker killed
        elif status == 200:
            assert body["output"] == "echo:token-%d" % i, (i, body)
        else:
            # Only the worker kills may fail a call, and they say so.
            assert status == 502 and body["kind"] == "worker_lost", (i, status, body)
    assert kills, "the soak killed no worker: it tested nothing"
    lost = len(by_status.get(502, []))
    assert lost <= len(kills) + CALLS // 100, (lost, len(kills))
    assert len(by_status.get(200, [])) >= CALLS - CALLS // 100 - len(kills)

    # And the platform is whole afterwards.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, stats, _ = http("GET", stack.url + "/stats")
        if status == 200 and [w["state"] for w in stats["workers"]] == ["idle"] * 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("pool did not return to 3 idle workers: %s" % stats)
