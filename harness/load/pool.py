"""The worker pool over time: a thread polls the stats while a phase runs and keeps a timeline.

Auto-scaling is judged by how many workers it kept (the cost) next to what the clients saw, so
the runner records the pool size and the busy workers every few hundred milliseconds.
"""

import json
import logging
import threading
import time
import urllib.request

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
LIVE = ("idle", "busy")   # "starting", "retiring" and "dead" workers take no new job


def count(stats):
    """(workers, busy, queue) from a /stats answer: workers able to take a job, those running one."""
    workers = stats.get("workers") or []
    live = [w for w in workers if w.get("state") in LIVE]
    return len(live), sum(1 for w in live if w["state"] == "busy"), stats.get("queue") or 0


class PoolWatcher:
    """Poll the stats every `interval` seconds from a daemon thread, between start() and stop().

    With `server_sock` it asks the server directly (the answer GET /stats relays): under a burst
    every gateway thread is held by an invocation, and GET /stats would wait behind them for
    seconds, leaving holes in the timeline exactly where it matters. Else it asks `url`/stats.

    >>> with PoolWatcher(stack.url, stack.server_sock) as watcher:
    ...     run_the_phase()
    >>> watcher.samples   # [{"t", "workers", "busy", "queue"}], t in seconds since start()
    """

    def __init__(self, url, server_sock=None, interval=INTERVAL_S):
        self.url = url.rstrip("/") + "/stats"
        self.server_sock = server_sock
        self._client = None
        self.interval = interval
        self.samples = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = None
        self.started = None

    def start(self, started=None):
        self.started = time.monotonic() if started is None else started
        self._thread = threading.Thread(target=self._loop, name="pool-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def stats(self):
        if self.server_sock:
            if self._client is None:
                from reference.gateway.client import ServerClient
                self._client = ServerClient(self.server_sock)
            return self._client.stats()
        with urllib.request.urlopen(self.url, timeout=2.0) as r:
            return json.load(r)

    def _sample(self):
        asked = time.monotonic()
        try:
            workers, busy, queue = count(self.stats())
            self.samples.append({"t": round(asked - self.started, 3), "workers": workers,
                                 "busy": busy, "queue": queue})
        except Exception as e:   # a missed sample is a hole in the plot, not a failed run
            self.failures += 1
            log.debug("stats failed: %s", e)
        return asked

    def _loop(self):
        try:
            while not self._stop.is_set():
                asked = self._sample()
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - asked)))
            # One more at the end, so even a phase shorter than the interval has its pool at
            # both ends.
            self._sample()
        finally:
            if self._client is not None:
                self._client.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def summarize(samples):
    """Mean and max of the pool size and of the busy workers over the samples (None if there are none).

    Samples are evenly spaced, so their mean is the time average: workers_mean x duration is
    the worker-seconds the pool cost.
    """
    if not samples:
        return {"samples": 0, "workers_mean": None, "workers_max": None, "busy_mean": None}
    n = len(samples)
    return {"samples": n,
            "workers_mean": sum(s["workers"] for s in samples) / n,
            "workers_max": max(s["workers"] for s in samples),
            "busy_mean": sum(s["busy"] for s in samples) / n}
