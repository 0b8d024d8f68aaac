"""Each scheduling strategy on small deterministic sequences of submits and dones."""

import collections

import pytest

from reference.scheduling import strategies
from reference.wire.errors import BadRequest


def make(name, workers=(1, 2, 3), weights=None):
    strategy = strategies.create(name, weights)
    for worker_id in workers:
        assert strategy.add_worker(worker_id) == []
    return strategy


def submit_all(strategy, jobs, fn="f"):
    return [strategy.submit(job, fn) for job in jobs]


# -- registry --------------------------------------------------------------------------------

def test_registry_knows_every_strategy_by_name_case_insensitively():
    assert set(strategies.STRATEGIES) == {"RR", "FIFO", "WEIGHTED", "LEAST", "WARM"}
    for name, cls in strategies.STRATEGIES.items():
        assert isinstance(strategies.create(name.lower()), cls)
        assert cls.name == name


def test_unknown_strategy_is_a_bad_request_listing_the_names():
    with pytest.raises(BadRequest) as info:
        strategies.create("RANDOM")
    assert "RANDOM" in info.value.message
    for name in strategies.STRATEGIES:
        assert name in info.value.message


@pytest.mark.parametrize("weight", [0, -1, 1.5, "2", True])
def test_bad_weights_are_refused(weight):
    with pytest.raises(BadRequest):
        strategies.create("WEIGHTED", [weight])
    strategy = strategies.create("WEIGHTED")
    with pytest.raises(BadRequest):
        strategy.add_worker(1, weight)


# -- RR and FIFO on the same sequence ---------------------------------------------------------

def test_rr_assigns_in_turn_even_to_busy_workers():
    rr = make("RR", workers=("a", "b"))
    assert submit_all(rr, range(5)) == ["a", "b", "a", "b", "a"]
    assert rr.outstanding("a") == 3 and rr.outstanding("b") == 2
    assert rr.queue_length() == 0
    # Nothing is held back, so a finished job frees nothing.
    assert rr.done("a", 0) == []
    assert rr.outstanding("a") == 2


def test_fifo_holds_jobs_until_the_first_worker_becomes_free():
    fifo = make("FIFO", workers=("a", "b"))
    # The same sequence as the RR test: only two jobs find a free worker.
    assert submit_all(fifo, range(5)) == ["a", "b", None, None, None]
    assert fifo.queue_length() == 3
    # b finishes first, so the oldest waiting job goes to b, not to a.
    assert fifo.done("b", 1) == [(2, "b")]
    assert fifo.done("a", 0) == [(3, "a")]
    assert fifo.done("a", 3) == [(4, "a")]
    assert fifo.queue_length() == 0
    assert fifo.outstanding("a") == 1 and fifo.outstanding("b") == 1


def test_fifo_uses_idle_workers_in_the_order_they_became_free():
    fifo = make("FIFO", workers=("a", "b", "c"))
    assert submit_all(fifo, range(3)) == ["a", "b", "c"]
    for worker, job in (("c", 2), ("a", 0), ("b", 1)):
        assert fifo.done(worker, job) == []
    assert submit_all(fifo, range(3, 6)) == ["c", "a", "b"]


def test_fifo_new_worker_takes_a_waiting_job_at_once():
    fifo = make("FIFO", workers=("a",))
    assert submit_all(fifo, range(3)) == ["a", None, None]
    assert fifo.add_worker("b") == [(1, "b")]
    assert fifo.queue_length() == 1


def test_done_for_an_unknown_job_or_worker_changes_nothing():
    fifo = make("FIFO", workers=("a",))
    assert submit_all(fifo, range(2)) == ["a", None]
    assert fifo.done("a", 99) == []
    assert fifo.done("zz", 0) == []
    assert fifo.outstanding("a") == 1 and fifo.queue_length() == 1


# -- WEIGHTED ------------------------------------------------------------------------------

def test_weighted_cycle_matches_weights_and_is_smooth():
    weights = {"a": 5, "b": 1, "c": 1}
    weighted = make("WEIGHTED", workers=("a", "b", "c"), weights=weights)
    cycle = submit_all(weighted, range(7))
    assert collections.Counter(cycle) == weights
    # nginx's smooth order: a's five turns are interleaved with b and c, not in one run.
    assert cycle == ["a", "a", "b", "a", "c", "a", "a"]
    # And the next cycle repeats it.
    assert submit_all(weighted, range(7, 14)) == cycle


def test_weighted_list_applies_in_registration_order_and_sticks_to_the_id():
    weighted = make("WEIGHTED", workers=(10, 11, 12, 13), weights=[1, 1, 2, 2])
    assert [weighted.weight(w) for w in (10, 11, 12, 13)] == [1, 1, 2, 2]
    cycle = submit_all(weighted, range(6))
    assert collections.Counter(cycle) == {10: 1, 11: 1, 12: 2, 13: 2}
    assert all(a != b for a, b in zip(cycle, cycle[1:])), cycle
    # A worker registered again (a reconnecting server) gets its weight back.
    weighted.remove_worker(12)
    weighted.add_worker(12)
    assert weighted.weight(12) == 2
    # Beyond the list, and when the caller names a weight, the list does not apply.
    weighted.add_worker(14)
    weighted.add_worker(15, weight=3)
    assert weighted.weight(14) == 1 and weighted.weight(15) == 3


# -- LEAST and WARM --------------------------------------------------------------------------

def test_least_picks_the_fewest_outstanding_and_rotates_ties():
    least = make("LEAST", workers=("a", "b", "c"))
    assert submit_all(least, range(3)) == ["a", "b", "c"]
    least.done("b", 1)
    assert least.submit(3, "f") == "b"      # the only one with nothing to do
    least.done("a", 0)
    least.done("c", 2)
    # a and c are tied at zero: the rotation continues after b, so c then a.
    assert submit_all(least, (4, 5)) == ["c", "a"]
    # Everyone has one job now: the tie rotates on.
    assert submit_all(least, (6, 7, 8)) == ["b", "c", "a"]


def test_warm_prefers_the_idle_worker_that_last_ran_the_function():
    warm = make("WARM", workers=("a", "b", "c"))
    assert warm.submit(0, "hello") == "a"
    assert warm.submit(1, "slow") == "b"
    warm.done("a", 0)
    warm.done("b", 1)
    # c is as idle as a and b, but a last ran hello and b last ran slow.
    assert warm.submit(2, "slow") == "b"
    assert warm.submit(3, "hello") == "a"
    # The warm worker is busy now: fall back to the least loaded, which is c.
    assert warm.submit(4, "hello") == "c"


def test_warm_picks_the_most_recent_of_several_warm_workers():
    warm = make("WARM", workers=("a", "b"))
    assert submit_all(warm, range(2), fn="hello") == ["a", "b"]
    warm.done("b", 1)
    warm.done("a", 0)
    assert warm.submit(2, "hello") == "b"


# -- removing workers mid-stream ------------------------------------------------------------

def test_rr_keeps_its_turn_when_a_worker_goes():
    rr = make("RR", workers=("a", "b", "c", "d"))
    assert submit_all(rr, range(2)) == ["a", "b"]
    assert rr.remove_worker("a") == [0]      # a's job is forgotten, and reported
    assert rr.outstanding("a") == 0
    assert submit_all(rr, range(2, 6)) == ["c", "d", "b", "c"]
    assert rr.remove_worker("d") == [3]
    assert rr.remove_worker("b") == [1, 4]
    assert submit_all(rr, range(6, 8)) == ["c", "c"]
    assert rr.remove_worker("c") == [2, 5, 6, 7]
    assert rr.workers() == []
    assert rr.submit(8, "f") is None


def test_fifo_forgets_a_removed_worker_busy_or_idle():
    fifo = make("FIFO", workers=("a", "b", "c"))
    assert submit_all(fifo, range(2)) == ["a", "b"]
    fifo.remove_worker("c")                   # idle: must not be handed jobs any more
    fifo.remove_worker("a")                   # busy: its job is forgotten
    assert fifo.workers() == ["b"]
    assert submit_all(fifo, range(2, 4)) == [None, None]
    assert fifo.done("a", 0) == []
    assert fifo.done("b", 1) == [(2, "b")]
    assert fifo.queue_length() == 1
    # With no worker left the queue stays, and the next worker takes it.
    fifo.remove_worker("b")
    assert fifo.queue_length() == 1
    assert fifo.add_worker("d") == [(3, "d")]


@pytest.mark.parametrize("name", ["WEIGHTED", "LEAST", "WARM"])
def test_other_strategies_never_pick_a_removed_worker(name):
    strategy = make(name, workers=("a", "b", "c"))
    submit_all(strategy, range(4))
    strategy.remove_worker("b")
    picked = submit_all(strategy, range(4, 20))
    assert set(picked) == {"a", "c"}
    assert strategy.workers() == ["a", "c"]


def test_registering_a_known_worker_again_keeps_its_jobs():
    rr = make("RR", workers=("a", "b"))
    rr.submit(0, "f")
    assert rr.add_worker("a") == []
    assert rr.workers() == ["a", "b"]
    assert rr.outstanding("a") == 1
