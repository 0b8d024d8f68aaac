"""The harness's statistics on known data: percentiles, timelines, spread and Welch's test."""

import math

import pytest

from harness.analysis import stats
from harness.load import pool


def test_percentile_interpolates_like_numpy():
    values = [1, 2, 3, 4]
    assert stats.percentile(values, 0) == 1
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 100) == 4
    assert stats.percentile(list(range(101)), 99) == 99
    assert stats.percentile([10, 20], 90) == pytest.approx(19.0)
    assert stats.percentile([7], 99) == 7
    assert stats.percentile([], 50) is None


def test_latency_summary_and_quantiles():
    summary = stats.latency_summary([5, 1, 4, 2, 3])
    assert summary == {"p50": 3, "p90": pytest.approx(4.6), "p99": pytest.approx(4.96), "max": 5, "mean": 3}
    assert stats.latency_summary([])["p99"] is None
    q = stats.quantiles(range(1, 11), points=11)
    assert q[0] == 1 and q[-1] == 10 and len(q) == 11
    assert q == sorted(q)


def test_timeline_buckets_by_completion_second():
    events = [(0.1, True, 10), (0.9, True, 30), (1.5, False, 99), (2.2, True, 5), (7.0, True, 1)]
    buckets = stats.timeline(events, duration=3.0)
    assert [b["t"] for b in buckets] == [0, 1, 2]
    assert [(b["ok"], b["errors"]) for b in buckets] == [(2, 0), (0, 1), (2, 0)]  # 7.0 s clamps into the last
    assert buckets[0]["p50_ms"] == 20
    assert buckets[0]["p99_ms"] == pytest.approx(29.8)
    assert buckets[1]["p99_ms"] == 99   # an error's latency still counts in its second


def test_spread_gives_a_t_based_confidence_interval():
    s = stats.spread([10, 12, 14])
    assert s["mean"] == 12 and s["stdev"] == 2
    half = 4.302652729749464 * 2 / math.sqrt(3)   # t(0.975, df=2)
    assert s["ci95"] == pytest.approx([12 - half, 12 + half], rel=1e-6)
    assert stats.spread([5])["ci95"] is None
    assert stats.spread([])["mean"] is None


def test_t_distribution_matches_tables():
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, rel=1e-5)
    assert stats.t_two_sided_p(2.0, 5) == pytest.approx(0.101939, rel=1e-4)
    assert stats.t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    assert stats.betainc(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-4)


def test_welch_on_known_data():
    # scipy.stats.ttest_ind(a, b, equal_var=False) gives t=-2.1909, p=0.07099 here.
    result = stats.welch([1, 2, 3, 4], [3, 4, 5, 6])
    assert result["t"] == pytest.approx(-2.19089, rel=1e-4)
    assert result["df"] == pytest.approx(6.0)
    assert result["p"] == pytest.approx(0.070988, rel=1e-3)
    assert result["significant"] is False
    clear = stats.welch([10.0, 10.2, 9.9, 10.1], [20.1, 19.8, 20.0, 20.3])
    assert clear["p"] < 1e-6 and clear["significant"] is True


def test_welch_needs_two_runs_a_side():
    assert stats.welch([1.0], [2.0, 3.0])["p"] is None
    assert stats.welch([2, 2], [2, 2])["significant"] is False
    assert stats.welch([1, 1], [2, 2])["significant"] is True


def test_pool_counts_workers_that_can_take_a_job():
    answer = {"queue": 3, "workers": [{"id": 0, "state": "busy"}, {"id": 1, "state": "idle"},
                                      {"id": 2, "state": "starting"}, {"id": 3, "state": "retiring"},
                                      {"id": 4, "state": "busy"}, {"id": 5, "state": "dead"}]}
    assert pool.count(answer) == (3, 2, 3)
    assert pool.count({"workers": []}) == (0, 0, 0)


def test_pool_summary_is_the_time_average_of_evenly_spaced_samples():
    samples = [{"t": 0.25 * i, "workers": w, "busy": b, "queue": 0}
               for i, (w, b) in enumerate([(1, 1), (2, 2), (4, 4), (4, 1)])]
    assert pool.summarize(samples) == {"samples": 4, "workers_mean": 2.75, "workers_max": 4, "busy_mean": 2.0}
    assert pool.summarize([])["workers_mean"] is None
