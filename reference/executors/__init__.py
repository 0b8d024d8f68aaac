"""Executors run jobs on workers for the server: `local` (pre-forked processes on pipes) and
`nats` (worker hosts through NATS JetStream). `Executor` is the seam the server uses, and
`Scalable` the part an executor that can grow and shrink its own pool adds to it.

An executor is made with two callbacks from the server: `on_up(wid)` when worker `wid` can
take jobs (the server then registers it with the balancer), and `on_down(wid, orphans)` when it
is gone, with `orphans` the (Job, future) pairs that were waiting for it and never started
(the server schedules them again). Worker ids are small ints, the executor's own.
"""

import asyncio
from typing import Protocol

from reference.wire.jobs import Job


class Executor(Protocol):
    """What the server needs of whatever runs its jobs."""

    @property
    def size(self) -> int:
        """How many workers the executor means to have now (for /health and the logs)."""

    async def start(self) -> None:
        """Start the workers (or connect to them). The server awaits it before it takes any
        call; workers come up afterwards, each announced by `on_up`."""

    def submit(self, wid: int, job: Job) -> "asyncio.Future":
        """Run `job` on worker `wid` (which the balancer named); the future gets its Outcome,
        or a FaasError (Timeout, WorkerLost, Unavailable) when the job could not be run."""

    def alive(self) -> list:
        """The ids of the workers that can take a job now."""

    def snapshot(self) -> list:
        """One dict per worker for /stats: at least id, pid, state, jobs."""

    def closing(self) -> None:
        """A stop is coming (the server got its signal): a worker that dies from now on is not
        replaced. A TERM to the whole process group reaches the workers with the server's, and
        a replacement started then would only hold up the stop."""

    async def stop(self) -> None:
        """Stop every worker; the jobs they held are failed."""


class Scalable(Executor, Protocol):
    """An executor that can grow and shrink its pool between `min_size` and `max_size`; the
    server's autoscaler (reference/server/autoscaler.py) drives it."""

    min_size: int
    max_size: int

    def waiting(self) -> int:
        """Jobs assigned to a worker and not started yet."""

    def grow(self) -> bool:
        """Add one worker, up to max_size; True if one was added."""

    def retire_idle(self, cooldown_s: float) -> bool:
        """Retire one worker idle for cooldown_s, down to min_size; True if one was retired."""
