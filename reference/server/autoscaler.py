"""Auto-scaling of the server's worker pool: add a worker while jobs wait and every worker is
busy; retire one idle for a while. Off the request path: a periodic look at the queues, one
step per look, so the pool grows and shrinks gradually instead of chasing every burst."""

import asyncio
import logging

from reference.executors import Scalable

log = logging.getLogger(__name__)

# How often the queues are looked at.
SCALE_EVERY_S = 0.25


class Autoscaler:
    """Drives a Scalable pool. `unassigned()`: how many jobs wait for the balancer (the
    server's count), to which the pool adds the jobs waiting on a worker."""

    def __init__(self, pool: Scalable, unassigned, cooldown_s, every_s=SCALE_EVERY_S):
        self.pool, self.unassigned = pool, unassigned
        self.cooldown_s, self.every_s = cooldown_s, every_s

    def step(self):
        """One look: grow, retire or nothing. Returns which ("grow", "retire" or None)."""
        waiting = self.unassigned() + self.pool.waiting()
        busy = all(w["state"] == "busy" for w in self.pool.snapshot() if w["state"] in ("idle", "busy"))
        if waiting and busy:
            return "grow" if self.pool.grow() else None
        if not waiting:
            return "retire" if self.pool.retire_idle(self.cooldown_s) else None
        return None

    async def run(self):
        log.info("auto-scaling between %d and %d workers", self.pool.min_size, self.pool.max_size)
        while True:
            await asyncio.sleep(self.every_s)
            self.step()
