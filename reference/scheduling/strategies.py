"""Scheduling strategies: which worker runs each job. Pure classes (no I/O, no clock) in a
name -> class registry, so the balancer, the tests and the harness drive them the same way.
"""

import collections
import logging

from reference.wire.errors import BadRequest

log = logging.getLogger(__name__)


class Strategy:
    """The contract every strategy keeps.

    The caller (the balancer) tells the strategy which workers exist (`add_worker`,
    `remove_worker`), asks it where each job goes (`submit`) and tells it when a worker finished
    a job (`done`). A strategy either names a worker at once or keeps the job in its own queue
    and hands it out later, from `done` or `add_worker`, as `(job_id, worker_id)` pairs.

    Worker and job ids are whatever hashable values the caller uses; the strategy only compares
    them. `weights` is a dict worker_id -> weight, or a list applied in registration order
    (the first worker ever registered gets the first weight, and keeps it if it comes back).
    """

    name = None

    def __init__(self, weights=None):
        if isinstance(weights, dict):
            self._weights_by_id, self._weights_left = dict(weights), []
        else:
            self._weights_by_id, self._weights_left = {}, list(weights or [])
        for w in list(self._weights_by_id.values()) + self._weights_left:
            _check_weight(w)
        self._order = []            # registered workers, in registration order
        self._weight = {}           # worker_id -> weight in force
        # worker_id -> {job_id: None}, jobs assigned and not done (a dict keeps assignment order)
        self._outstanding = {}

    # -- workers -------------------------------------------------------------------------

    def add_worker(self, worker_id, weight=None):
        """Register a worker. `weight=None` takes it from the constructor's weights (else 1).
        Registering a known worker again only updates its weight. Returns the assignments this
        makes possible (queued jobs a new idle worker can take), as for `done`."""
        if weight is None:
            weight = self._configured_weight(worker_id)
        _check_weight(weight)
        self._weight[worker_id] = weight
        if worker_id in self._outstanding:
            return []
        self._order.append(worker_id)
        self._outstanding[worker_id] = {}
        return self._worker_added(worker_id)

    def remove_worker(self, worker_id):
        """Forget a worker and the jobs outstanding on it (the caller deals with those).
        Returns the job ids that were outstanding on it, oldest first. Unknown workers are ignored."""
        if worker_id not in self._outstanding:
            return []
        index = self._order.index(worker_id)
        self._order.pop(index)
        del self._weight[worker_id]
        lost = list(self._outstanding.pop(worker_id))
        self._worker_removed(worker_id, index)
        return lost

    def workers(self):
        """The registered worker ids, in registration order."""
        return list(self._order)

    def weight(self, worker_id):
        return self._weight[worker_id]

    def outstanding(self, worker_id):
        """How many jobs were assigned to this worker and are not done yet."""
        return len(self._outstanding.get(worker_id, ()))

    # -- jobs ----------------------------------------------------------------------------

    def submit(self, job_id, fn_id):
        """Where job_id (a call of fn_id) runs: a worker id, or None if it waits in this
        strategy's queue (it comes back later from `done` or `add_worker`). With no worker
        registered at all, non-queueing strategies return None without queueing: the caller
        should check `workers()` first and refuse the job."""
        if not self._order:
            return None
        worker_id = self._choose(job_id, fn_id)
        if worker_id is not None:
            self._assign(job_id, fn_id, worker_id)
        return worker_id

    def done(self, worker_id, job_id):
        """worker_id finished job_id. Returns the (job_id, worker_id) assignments that become
        possible now, in the order they should be sent. An unknown worker or job is ignored."""
        jobs = self._outstanding.get(worker_id)
        if jobs is None or job_id not in jobs:
            return []
        del jobs[job_id]
        return self._worker_freed(worker_id)

    def queue_length(self):
        """Jobs this strategy holds back (not the jobs waiting at the server behind a busy
        worker: those are already assigned and count in `outstanding`)."""
        return 0

    # -- what subclasses fill in ---------------------------------------------------------

    def _choose(self, job_id, fn_id):
        """Pick a worker for a new job (at least one is registered), or None to queue it."""
        raise NotImplementedError

    def _assign(self, job_id, fn_id, worker_id):
        self._outstanding[worker_id][job_id] = None

    def _worker_added(self, worker_id):
        return []

    def _worker_removed(self, worker_id, index):
        pass

    def _worker_freed(self, worker_id):
        return []

    # -- helpers -------------------------------------------------------------------------

    def _configured_weight(self, worker_id):
        if worker_id not in self._weights_by_id:
            # A list is consumed in registration order; the id keeps its weight afterwards so
            # a worker that is registered again (server reconnect, respawn) gets the same one.
            self._weights_by_id[worker_id] = self._weights_left.pop(0) if self._weights_left else 1
        return self._weights_by_id[worker_id]

    def _next_in_turn(self, cursor, candidates):
        """The first worker of `candidates` at or after position `cursor` of the registration
        order (wrapping round), and the position just after it: ties rotate fairly."""
        n = len(self._order)
        for step in range(n):
            index = (cursor + step) % n
            if self._order[index] in candidates:
                return self._order[index], (index + 1) % n
        raise AssertionError("no candidate among the registered workers")

    def __repr__(self):
        return "<%s workers=%r queue=%d>" % (type(self).__name__, self._order, self.queue_length())


def _check_weight(weight):
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise BadRequest("a worker weight must be a whole number >= 1, not %r" % (weight,))


class RoundRobin(Strategy):
    """RR: each job goes to the next registered worker in turn, whatever its load. A busy
    worker's jobs wait in its own queue at the server."""

    name = "RR"

    def __init__(self, weights=None):
        super().__init__(weights)
        self._cursor = 0    # position in the registration order of the next worker to use

    def _choose(self, job_id, fn_id):
        worker_id = self._order[self._cursor % len(self._order)]
        self._cursor = (self._cursor + 1) % len(self._order)
        return worker_id

    def _worker_removed(self, worker_id, index):
        # Keep pointing at the same next worker: everything after `index` moved down by one.
        if index < self._cursor:
            self._cursor -= 1
        if self._order:
            self._cursor %= len(self._order)
        else:
            self._cursor = 0


class Fifo(Strategy):
    """FIFO: one queue in arrival order. A job goes to an idle worker if there is one (idle
    workers are used in the order they became free), else it waits for the first worker that
    finishes. A worker never holds more than one job."""

    name = "FIFO"

    def __init__(self, weights=None):
        super().__init__(weights)
        self._idle = collections.deque()    # free workers, the longest free first
        self._queue = collections.deque()   # (job_id, fn_id) waiting, the oldest first

    def queue_length(self):
        return len(self._queue)

    def _choose(self, job_id, fn_id):
        if self._idle:
            return self._idle.popleft()
        self._queue.append((job_id, fn_id))
        return None

    def _worker_added(self, worker_id):
        return self._worker_freed(worker_id)

    def _worker_removed(self, worker_id, index):
        if worker_id in self._idle:
            self._idle.remove(worker_id)

    def _worker_freed(self, worker_id):
        if self._outstanding[worker_id]:
            return []
        if self._queue:
            job_id, fn_id = self._queue.popleft()
            self._assign(job_id, fn_id, worker_id)
            return [(job_id, worker_id)]
        self._idle.append(worker_id)
        return []


class Weighted(Strategy):
    """WEIGHTED: smooth weighted round robin (nginx's algorithm). Over a cycle of sum(weights)
    jobs each worker gets exactly its weight, interleaved rather than in bursts. Like RR it
    ignores load."""

    name = "WEIGHTED"

    def __init__(self, weights=None):
        super().__init__(weights)
        self._current = {}

    def _choose(self, job_id, fn_id):
        # Every worker earns its weight; the richest is chosen and pays the total back.
        # Ties go to the earliest registered, which keeps the sequence deterministic.
        total = 0
        for worker_id in self._order:
            self._current[worker_id] = self._current.get(worker_id, 0) + self._weight[worker_id]
            total += self._weight[worker_id]
        best = max(self._order, key=lambda w: self._current[w])
        self._current[best] -= total
        return best

    def _worker_added(self, worker_id):
        self._current[worker_id] = 0
        return []

    def _worker_removed(self, worker_id, index):
        self._current.pop(worker_id, None)


class LeastLoaded(Strategy):
    """LEAST: the worker with the fewest outstanding jobs; ties rotate over the registration
    order so equally loaded workers share the work."""

    name = "LEAST"

    def __init__(self, weights=None):
        super().__init__(weights)
        self._cursor = 0

    def _least_loaded(self):
        fewest = min(self.outstanding(w) for w in self._order)
        candidates = {w for w in self._order if self.outstanding(w) == fewest}
        worker_id, self._cursor = self._next_in_turn(self._cursor, candidates)
        return worker_id

    def _choose(self, job_id, fn_id):
        return self._least_loaded()

    def _worker_removed(self, worker_id, index):
        if index < self._cursor:
            self._cursor -= 1
        self._cursor = self._cursor % len(self._order) if self._order else 0


class Warm(LeastLoaded):
    """WARM: an idle worker whose last job was the same function (its runtime is warm), the
    one that ran it most recently first; otherwise the least loaded worker, as LEAST."""

    name = "WARM"

    def __init__(self, weights=None):
        super().__init__(weights)
        self._last_fn = {}      # worker_id -> fn_id of the last job assigned to it
        self._last_at = {}      # worker_id -> sequence number of that assignment
        self._sequence = 0

    def _choose(self, job_id, fn_id):
        warm = [w for w in self._order if self.outstanding(w) == 0 and self._last_fn.get(w) == fn_id]
        if warm:
            return max(warm, key=lambda w: self._last_at[w])
        return self._least_loaded()

    def _assign(self, job_id, fn_id, worker_id):
        super()._assign(job_id, fn_id, worker_id)
        self._sequence += 1
        self._last_fn[worker_id] = fn_id
        self._last_at[worker_id] = self._sequence

    def _worker_removed(self, worker_id, index):
        super()._worker_removed(worker_id, index)
        self._last_fn.pop(worker_id, None)
        self._last_at.pop(worker_id, None)


STRATEGIES = {cls.name: cls for cls in (RoundRobin, Fifo, Weighted, LeastLoaded, Warm)}


def create(name, weights=None):
    """A new strategy by name (case-insensitive); BadRequest lists the known names."""
    cls = STRATEGIES.get(str(name).upper())
    if cls is None:
        raise BadRequest("unknown strategy %r: choose one of %s" % (name, ", ".join(STRATEGIES)))
    return cls(weights)
