"""The local executor's watchdog, one timer for the pool: a worker past its job's deadline is
killed once and its call answered with a timeout; a worker within it is left alone and looked
at again."""

import asyncio
import subprocess

from reference.executors.local import LocalWorkers, Worker
from reference.wire.errors import Timeout
from reference.wire.jobs import Job


def test_the_watchdog_kills_the_stuck_worker_only_and_keeps_watching_the_busy_one():
    stuck_proc = subprocess.Popen(["sleep", "60"])
    busy_proc = subprocess.Popen(["sleep", "60"])
    try:
        async def main():
            loop = asyncio.get_running_loop()
            pool = LocalWorkers(2, on_up=None, on_down=None)
            futures = []
            for wid, proc, deadline in ((0, stuck_proc, 0.0), (1, busy_proc, float("inf"))):
                worker = pool.workers[wid] = Worker(wid)
                future = loop.create_future()
                futures.append(future)
                worker.pid, worker.state = proc.pid, "busy"
                worker.current = (Job(job_id=wid, fn_id="f_1", fn_dir="/nowhere", lang="python", timeout_ms=10), future)
                worker.deadline = deadline
            pool._watch()
            assert isinstance(futures[0].exception(), Timeout)
            assert not futures[1].done()
            assert pool.workers[0].deadline is None    # not killed again at the next look
            assert pool._watchdog is not None          # the busy worker is looked at again
            pool._watchdog.cancel()
        asyncio.run(main())
        assert stuck_proc.wait(10) == -9
        assert busy_proc.poll() is None
    finally:
        for proc in (stuck_proc, busy_proc):
            proc.kill()
            proc.wait()
