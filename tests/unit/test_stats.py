"""The harness's statistics on known data (checked against scipy and hand-worked values), and the
sweep's step and capacity rules on synthetic samples."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from harness.analysis import stats, sweep
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


def test_timeline_keeps_whole_buckets_only():
    events = [(0.1, True, 10), (0.9, True, 30), (1.5, False, 99), (2.2, True, 5), (-0.1, True, 1), (3.4, True, 1)]
    buckets = stats.timeline(events, duration=3.5, width=1.0)
    # 3.5 s make three whole 1-second buckets: the half second at the end would be drawn as a collapse.
    assert [(b["t"], b["dt"]) for b in buckets] == [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert [(b["ok"], b["errors"]) for b in buckets] == [(3, 0), (0, 1), (1, 0)]
    assert buckets[1]["p99_ms"] == 99   # an error's latency still counts in its bucket
    assert buckets[0]["p50_ms"] == 10


def test_timeline_buckets_are_sub_second_for_short_phases():
    assert stats.bucket_width(2.0) == 0.1
    assert stats.bucket_width(10.0) == 0.2
    assert stats.bucket_width(25.0) == 0.5
    assert stats.bucket_width(600.0) == 10.0
    buckets = stats.timeline([(i / 100 + 0.005, True, 1.0) for i in range(230)], duration=2.3)
    assert len(buckets) == 23 and all(b["ok"] == 10 for b in buckets)


def test_spread_gives_a_t_based_confidence_interval():
    s = stats.spread([10, 12, 14])
    assert s["mean"] == 12 and s["stdev"] == 2
    half = 4.302652729749464 * 2 / math.sqrt(3)   # t(0.975, df=2) from the tables
    assert s["ci95"] == pytest.approx([12 - half, 12 + half], rel=1e-6)
    assert stats.spread([5])["ci95"] is None
    assert stats.spread([])["mean"] is None
    assert stats.spread([None, 4.0])["n"] == 1


def test_welch_matches_scipy_on_known_data():
    # scipy.stats.ttest_ind(a, b, equal_var=False) gives t=-2.1909, p=0.07099 here (df = 6).
    result = stats.welch([1, 2, 3, 4], [3, 4, 5, 6])
    assert result["t"] == pytest.approx(-2.19089, rel=1e-4)
    assert result["df"] == pytest.approx(6.0)
    assert result["p"] == pytest.approx(0.070988, rel=1e-3)
    assert result["significant"] is False
    clear = stats.welch([10.0, 10.2, 9.9, 10.1], [20.1, 19.8, 20.0, 20.3])
    assert clear["p"] < 1e-6 and clear["significant"] is True
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 2, 7), rng.normal(11, 3, 5)
    assert stats.welch(a, b)["p"] == pytest.approx(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_needs_two_runs_a_side():
    assert stats.welch([1.0], [2.0, 3.0])["p"] is None
    assert stats.welch([2, 2], [2, 2])["significant"] is False
    assert stats.welch([1, 1], [2, 2])["significant"] is True


def test_holm_adjusts_step_down_and_keeps_order():
    # Holm (1979) by hand: sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    adjusted, significant = stats.holm([0.04, 0.01, None, 0.03, 0.02])
    assert adjusted[0] == pytest.approx(0.06) and adjusted[1] == pytest.approx(0.04)
    assert adjusted[3] == pytest.approx(0.06) and adjusted[4] == pytest.approx(0.06)
    assert adjusted[2] is None and significant == [False, True, None, False, False]
    # A p-value that passes alone (0.03 < 0.05) does not pass among five.
    assert stats.holm([0.03, 0.5, 0.6, 0.7, 0.8])[1][0] is False
    assert stats.holm([0.03])[1] == [True]
    assert stats.holm([0.9, 0.8])[0] == [1.0, 1.0]


def test_quantile_ci_from_order_statistics_matches_the_binomial():
    values = np.arange(1, 1001, dtype=float)   # the k-th order statistic is k
    low, high = stats.quantile_ci(values, 0.99)
    n, q = 1000, 0.99
    # The ranks are scipy's binomial quantiles; the interval covers p99 with >= 95 %.
    assert low == scipy.stats.binom.ppf(0.025, n, q)
    assert high == scipy.stats.binom.ppf(0.975, n, q) + 1
    assert low < np.percentile(values, 99) < high
    assert stats.quantile_ci_coverage(n, q) >= 0.95
    assert stats.quantile_ci_coverage(200, 0.5) >= 0.95
    # Too few requests to bound p99 from above: the top end is unknown, not the max.
    assert stats.quantile_ci(np.arange(50.0), 0.99)[1] is None
    assert stats.quantile_ci([1.0], 0.5) is None


def test_a_median_against_a_target_is_decided_only_when_its_interval_is_on_one_side():
    # 5 pairs: the interval is the lowest to the highest, with 1 - 2 / 2**5 coverage.
    below = stats.median_against([0.48, 0.41, 0.45, 0.47, 0.44], 0.5)
    assert below["verdict"] == "met" and below["median"] == 0.45
    assert below["interval"] == [0.41, 0.48]
    assert below["coverage"] == pytest.approx(1 - 2 / 2 ** 5)
    assert stats.median_against([0.51, 0.62, 0.55, 0.58, 0.53], 0.5)["verdict"] == "not met"
    # The median is under the target, but one pair is over it: not decided.
    straddling = stats.median_against([0.47, 0.45, 0.52, 0.48, 0.46], 0.5)
    assert straddling["median"] < 0.5 and straddling["verdict"] == "undecided"
    # Too few pairs for any interval: never a verdict, however far from the target.
    assert stats.median_against([0.1, 0.1], 0.5)["verdict"] == "undecided"
    assert stats.median_against([], 0.5)["verdict"] == "undecided"


def test_quantile_ci_covers_the_true_quantile_in_simulation():
    rng = np.random.default_rng(7)
    true_p99 = scipy.stats.expon.ppf(0.99)
    hits = 0
    for _ in range(400):
        low, high = stats.quantile_ci(rng.exponential(size=2000), 0.99)
        hits += low <= true_p99 <= high
    assert hits / 400 > 0.92


def test_ccdf_reaches_the_slowest_request_on_a_log_scale():
    points = stats.ccdf(np.arange(1, 10001, dtype=float))
    latencies = [ms for ms, _ in points]
    fractions = [f for _, f in points]
    assert latencies == sorted(latencies) and fractions == sorted(fractions, reverse=True)
    assert points[0] == [1.0, 1.0] and points[-1] == [10000.0, 1e-4]
    # p99 is where 1 % are at least as slow.
    assert any(f == pytest.approx(0.01) and ms == pytest.approx(9901) for ms, f in points)
    assert stats.ccdf([]) == []


# -- sweeps ----------------------------------------------------------------------------------

@dataclasses.dataclass
class S:
    fn: str
    intended: float
    sent: float
    done: float
    ok: bool = True
    kind: str = None

    @property
    def latency_ms(self):
        return (self.done - self.intended) * 1000.0


def steady(rate, seconds, latency_s, start=0.0, fn="f", every=None):
    """Evenly spaced arrivals, each answered after latency_s (or every(i)'s latency)."""
    out = []
    for i in range(int(rate * seconds)):
        t = start + i / rate
        lat = every(i) if every else latency_s
        out.append(S(fn, t, t, t + lat))
    return out


def test_a_step_under_capacity_meets_the_slo():
    step = sweep.step_figures(steady(100, 5, 0.010), start=0.0, warmup=1.0, end=5.0, offered_rps=100,
                              slo_p99_ms=50)
    assert step["requests"] == 400 and step["ok"] == 400     # the first second is warm-up
    assert step["achieved_rps"] == pytest.approx(100, rel=0.01)
    assert step["latency_ms"]["p99"] == pytest.approx(10.0)
    assert not step["saturated"] and step["met_slo"]
    assert step["late"] == 0


def test_a_step_that_falls_behind_is_saturated():
    # Arrivals at 100/s served at 50/s: the k-th request waits k/100 s more.
    samples = [S("f", i / 100, i / 100, i / 50 + 0.01) for i in range(500)]
    step = sweep.step_figures(samples, 0.0, 1.0, 5.0, 100, slo_p99_ms=5000)
    assert step["achieved_rps"] == pytest.approx(50, rel=0.05)
    assert step["saturated"] and not step["met_slo"]


def test_a_tail_ten_times_the_slo_is_saturated_even_when_throughput_keeps_up():
    samples = steady(100, 5, 0.010, every=lambda i: 0.6 if i % 50 == 0 else 0.01)
    step = sweep.step_figures(samples, 0.0, 1.0, 6.0, 100, slo_p99_ms=50)
    assert step["latency_ms"]["p99"] > 500 and step["saturated"]


def test_errors_count_against_the_achieved_rate():
    samples = steady(100, 5, 0.010)
    for s in samples[::4]:
        s.ok, s.kind = False, "overloaded"
    step = sweep.step_figures(samples, 0.0, 1.0, 5.0, 100, 50)
    assert step["errors"] == {"overloaded": 100} and step["saturated"]


def test_the_poisson_draw_not_the_nominal_rate_decides_saturation():
    # The draw came out 10 % light (90 arrivals/s for a nominal 100): all served, not saturated.
    step = sweep.step_figures(steady(90, 5, 0.005), 0.0, 1.0, 5.0, offered_rps=100, slo_p99_ms=50)
    assert step["arrival_rps"] == pytest.approx(90, rel=0.01) and not step["saturated"]


def fake_step(rate, p99, saturated=False):
    return {"offered_rps": rate, "latency_ms": {"p99": p99}, "saturated": saturated,
            "met_slo": not saturated and p99 is not None and p99 <= 100}


def test_capacity_interpolates_between_the_last_good_and_the_first_bad_step():
    steps = [fake_step(20, 30), fake_step(40, 60), fake_step(80, 140), fake_step(160, 900, True)]
    cap = sweep.capacity(steps, 100)
    # p99 crosses 100 ms (100-60)/(140-60) = half of the way from 40 to 80 req/s.
    assert cap == {"capacity_rps": pytest.approx(60.0), "bound": "interpolated"}
    # A lucky step past the knee does not raise it.
    steps.append(fake_step(240, 50))
    assert sweep.capacity(steps, 100)["capacity_rps"] == pytest.approx(60.0)


def test_capacity_when_the_sweep_misses_the_knee():
    assert sweep.capacity([fake_step(20, 30), fake_step(40, 60)], 100) == {"capacity_rps": 40, "bound": "at_least"}
    assert sweep.capacity([fake_step(20, 300), fake_step(40, 600)], 100) == {"capacity_rps": 0.0, "bound": "below"}
    # Saturated without a tail (errors): the last good rate, not an extrapolation.
    assert sweep.capacity([fake_step(20, 30), fake_step(40, 20, True)], 100)["capacity_rps"] == 20
    assert sweep.capacity([], 100)["capacity_rps"] is None


def test_rates_as_a_list_or_a_geometric_series():
    assert sweep.rates([20, 40, 80]) == [20.0, 40.0, 80.0]
    assert sweep.rates({"start": 10, "factor": 2, "steps": 4}) == [10, 20, 40, 80]


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


def test_a_short_step_does_not_lose_its_last_answers_to_the_window_edge():
    # 20 arrivals in 2 s, each answered 250 ms later: the last two finish after the window ends.
    step = sweep.step_figures(steady(10, 2, 0.25), 0.0, 0.0, 2.0, 10, slo_p99_ms=500)
    assert step["achieved_rps"] == pytest.approx(10.0) and not step["saturated"]
