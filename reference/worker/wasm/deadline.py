"""How a wasm call is stopped at its deadline: wasmtime's epoch interruption, bumped by one
thread per worker only when a call is past its time."""

import threading
import time

WATCH_PERIOD_S = 0.05       # how often the deadline watch looks while calls run
WATCH_PARK_S = 1.0          # idle this long, the watch sleeps until the next call


class DeadlineWatch:
    """Stops a wasm call at its deadline with wasmtime's epoch interruption, without a clock
    ticking all the time: a thread bumps the engine's epoch only once the running call is past
    its deadline. It looks every WATCH_PERIOD_S while calls run (and sleeps to the exact deadline
    when that is nearer), and parks while the worker is idle. A fixed 5 ms ticker cost each
    idle worker 2 % of a core.

    Every store's deadline is one epoch ahead, and the epoch moves only under the lock while the
    call it is meant for still runs, so the next call can never be stopped by a late bump."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.call = None                # (number, deadline) of the running call
        self.number, self.last_end = 0, time.monotonic()
        self.parked, self.stopping = False, False
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wasm-deadlines", daemon=True)
        self.thread.start()

    def begin(self, store, deadline):
        with self.lock:
            self.number += 1
            self.call = (self.number, deadline)
            store.set_epoch_deadline(1)
        if self.parked:
            self.wake.set()

    def end(self):
        with self.lock:
            self.call, self.last_end = None, time.monotonic()

    def close(self):
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=1)

    def _run(self):
        while not self.stopping:
            call, now = self.call, time.monotonic()
            if call is None and now - self.last_end > WATCH_PARK_S:
                self.parked = True
                self.wake.clear()
                if self.call is None and not self.stopping:   # a begin() before `parked` was seen
                    self.wake.wait()
                self.parked = False
                continue
            if call is not None and now >= call[1]:
                with self.lock:
                    if self.call is not None and self.call[0] == call[0]:
                        self.engine.increment_epoch()
                        self.call = None        # once is enough: the call traps at its next check
                continue
            nap = WATCH_PERIOD_S if call is None else min(WATCH_PERIOD_S, call[1] - now)
            self.wake.wait(nap)
            self.wake.clear()
