"""A discrete-event model of the platform that drives the real strategy classes.

It predicts what a phase would measure on `workers` workers, at any scale, from an arrival
schedule and a service time per call. The parts it keeps are the ones the strategies decide:

1. A call arrives: `strategy.submit(job, fn)` names a worker, or keeps it in the strategy's own
   queue (FIFO). A named worker takes it at once if idle, else the call waits in that worker's
   queue, as at the server (RR, WEIGHTED, LEAST, WARM).
2. A worker runs one call at a time for its service time, plus its function's init time when
   the call is cold on that worker (the function is not among its last `warm_slots` functions).
3. At the end, `strategy.done(worker, job)` may hand out waiting calls; the worker then takes
   the next call of its own queue.

What it leaves out (a gap between model and measurement points at these): the gateway, the
server's pipes, the HTTP client, CPU contention between workers on the same cores, timeouts.
A small heapq event loop: the arrivals are a sorted list merged with the heap of completions.
"""

import collections
import dataclasses
import heapq
import math
import random

from reference.scheduling import strategies


@dataclasses.dataclass(slots=True)
class Job:
    at: float              # arrival, seconds
    fn: str                # the function called (the strategies see it; WARM uses it)
    service: float         # seconds of execution once started, warm
    tag: object = None     # whatever the caller wants back (a trace function, a closed-loop thread)


@dataclasses.dataclass(slots=True)
class Call:
    """One job's fate: times in the simulation's seconds; `worker` None when it was refused."""
    job: Job
    worker: object = None
    start: float = None
    end: float = None
    cold: bool = False
    ok: bool = True
    kind: str = None       # why not ok: "no_worker", "overloaded"

    @property
    def wait(self):
        return self.start - self.job.at

    @property
    def latency(self):
        return self.end - self.job.at


class Model:
    """`workers` servers under one strategy (a registered name or a Strategy instance)."""

    def __init__(self, workers, strategy="RR", weights=None, init_s=None, warm_slots=None, max_queue=None):
        if workers < 1:
            raise ValueError("a model needs at least one worker")
        self.strategy = strategy if isinstance(strategy, strategies.Strategy) else strategies.create(strategy, weights)
        self.workers = list(range(workers))
        self.init_s = dict(init_s or {})        # fn -> seconds a cold call adds
        self.warm_slots = warm_slots            # None: a worker keeps every function warm
        self.max_queue = max_queue              # None: no call is refused for a long queue

    def run(self, jobs, follow=None):
        """Every job's Call, in the order the jobs were given (then those `follow` added).

        `follow(call)` is told of each completed call and may return a new Job (a closed loop's
        next request); it arrives at its `at`, which must not be before the call's end.
        """
        strategy = self.strategy
        arrivals = sorted(range(len(jobs)), key=lambda i: jobs[i].at)
        jobs = list(jobs)
        calls = [Call(job) for job in jobs]
        queues = {w: collections.deque() for w in self.workers}   # assigned, not started
        running = {}                                              # worker -> job index
        warm = {w: collections.OrderedDict() for w in self.workers}
        heap, seq = [], 0     # (time, 0 = completion | 1 = arrival, seq, worker or job index)
        waiting = 0           # calls assigned to a worker and not started (the server's queue)

        def start(w, now):
            nonlocal seq, waiting
            i = queues[w].popleft()
            waiting -= 1
            call, fns = calls[i], warm[w]
            call.worker, call.start = w, now
            call.cold = call.job.fn not in fns
            fns[call.job.fn] = None
            fns.move_to_end(call.job.fn)
            if self.warm_slots is not None and len(fns) > self.warm_slots:
                fns.popitem(last=False)
            call.end = now + call.job.service + (self.init_s.get(call.job.fn, 0.0) if call.cold else 0.0)
            running[w] = i
            seq += 1
            heapq.heappush(heap, (call.end, 0, seq, w))

        def give(i, w, now):
            nonlocal waiting
            queues[w].append(i)
            waiting += 1
            if w not in running:
                start(w, now)

        def arrive(i, now):
            call = calls[i]
            if self.max_queue is not None and waiting + strategy.queue_length() >= self.max_queue:
                call.ok, call.kind, call.start = False, "overloaded", now
                call.end = now
                return
            w = strategy.submit(i, call.job.fn)
            if w is not None:
                give(i, w, now)
            elif not strategy.workers():
                call.ok, call.kind, call.start, call.end = False, "no_worker", now, now

        for w in self.workers:
            for i, w2 in strategy.add_worker(w):
                give(i, w2, 0.0)
        next_arrival = 0
        while next_arrival < len(arrivals) or heap:
            if heap and (next_arrival == len(arrivals) or heap[0][0] <= jobs[arrivals[next_arrival]].at):
                now, kind, _, what = heapq.heappop(heap)
            else:
                i = arrivals[next_arrival]
                next_arrival += 1
                arrive(i, jobs[i].at)
                continue
            if kind == 1:
                arrive(what, now)
                continue
            w, i = what, running.pop(what)
            for j, w2 in strategy.done(w, i):
                give(j, w2, now)
            if w not in running and queues[w]:
                start(w, now)
            if follow is not None:
                new = follow(calls[i])
                if new is not None:
                    if new.at < now:
                        raise ValueError("a follow-up job cannot arrive before the call it follows ended")
                    jobs.append(new)
                    calls.append(Call(new))
                    seq += 1
                    heapq.heappush(heap, (new.at, 1, seq, len(jobs) - 1))
        return calls


def simulate(jobs, workers, strategy="RR", **options):
    """The Calls of `jobs` on a fresh Model (options as Model's)."""
    return Model(workers, strategy, **options).run(jobs)


def closed_loop(model, threads, requests, fn, service):
    """`threads` clients each sending `requests` calls back to back, from time 0: the seed's
    injector. `service()` gives each call's service time. Returns every Call."""
    def follow(call):
        thread, left = call.job.tag
        if left == 0:
            return None
        return Job(call.end, fn, service(), (thread, left - 1))
    first = [Job(0.0, fn, service(), (t, requests - 1)) for t in range(threads)]
    return model.run(first, follow)


def poisson_jobs(rate, duration, mix, service, seed=0):
    """Poisson arrivals at `rate` for `duration` s, the function drawn from `mix` {fn: weight};
    `service(fn, rng)` gives each call's service time."""
    rng = random.Random(seed)
    names = sorted(mix)
    weights = [mix[n] for n in names]
    out, t = [], rng.expovariate(rate)
    while t < duration:
        fn = rng.choices(names, weights)[0]
        out.append(Job(t, fn, service(fn, rng)))
        t += rng.expovariate(rate)
    return out


# -- closed forms the model is checked against (tests/unit/test_model.py) -------------------------

def mm1_wait(arrival_rate, service_rate):
    """Mean time in queue of M/M/1: rho / (mu - lambda)."""
    rho = arrival_rate / service_rate
    if rho >= 1:
        return math.inf
    return rho / (service_rate - arrival_rate)


def erlang_c(servers, offered):
    """Probability that a call waits in M/M/c (Erlang C), `offered` = lambda / mu erlangs."""
    if offered >= servers:
        return 1.0
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= offered / k
        total += term
    top = term * offered / servers * servers / (servers - offered)
    return top / (total + top)


def mmc_wait(servers, arrival_rate, service_rate):
    """Mean time in queue of M/M/c with one FIFO queue: C(c, a) / (c mu - lambda)."""
    if arrival_rate >= servers * service_rate:
        return math.inf
    return erlang_c(servers, arrival_rate / service_rate) / (servers * service_rate - arrival_rate)


def ekm1_wait(k, arrival_rate, service_rate):
    """Mean time in queue of one worker of RR over k workers under Poisson arrivals: each worker
    gets every k-th call, so its gaps are Erlang-k (E_k/M/1, a G/M/1 queue). sigma solves
    sigma = A*(mu (1 - sigma)) with A*(s) = (lambda / (lambda + s))^k; the wait is
    sigma / (mu (1 - sigma))."""
    if arrival_rate >= k * service_rate:
        return math.inf
    sigma = 0.5
    for _ in range(10000):
        nxt = (arrival_rate / (arrival_rate + service_rate * (1 - sigma))) ** k
        if abs(nxt - sigma) < 1e-13:
            break
        sigma = nxt
    return sigma / (service_rate * (1 - sigma))
