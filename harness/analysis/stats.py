"""Statistics for the harness: percentiles and their confidence intervals, timelines, the spread
over repeats, tests between strategies and Holm's correction for many of them.

numpy and scipy do the numerics (matplotlib brings numpy already); what each test assumes is
written in results/README.md ("Significance").
"""

import math
import warnings

import numpy as np
from scipy import stats as sps

PERCENTILES = (50, 90, 99)
CONFIDENCE = 0.95
# Timeline buckets: the smallest width that gives at most MAX_BUCKETS over the phase.
BUCKET_WIDTHS = (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
MAX_BUCKETS = 60


def _array(values):
    return np.asarray([v for v in values if v is not None], dtype=float)


def percentile(values, p):
    """The p-th percentile (0..100), interpolating linearly (numpy's default); None when empty."""
    a = _array(values)
    return float(np.percentile(a, p)) if a.size else None


def latency_summary(latencies_ms):
    """p50/p90/p99/max/mean of latencies in ms (None for each when there is none)."""
    a = _array(latencies_ms)
    if not a.size:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    summary = {"p%d" % p: float(v) for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES))}
    summary["max"] = float(a.max())
    summary["mean"] = float(a.mean())
    return summary


def quantiles(latencies_ms, points=101):
    """`points` evenly spaced quantiles from min to max: a compact latency distribution."""
    a = _array(latencies_ms)
    if not a.size:
        return []
    return [float(v) for v in np.percentile(a, np.linspace(0, 100, points))]


def ccdf(latencies_ms, points=40):
    """[latency ms, fraction of requests at least that slow] at log-spaced fractions from 1 to 1/n.

    The tail is where strategies differ; 101 evenly spaced quantiles stop at 1 %, these reach
    the slowest request, so a CCDF on log axes shows p99.9 when there are thousands of samples.
    """
    a = np.sort(_array(latencies_ms))
    n = a.size
    if not n:
        return []
    # a[i] has n - i samples at or above it; pick the i whose n - i are log-spaced from n to 1,
    # and the decades (p90, p99, p99.9 of n) exactly.
    decades = n / 10.0 ** np.arange(0, math.floor(math.log10(n)) + 1)
    above = np.unique(np.round(np.concatenate([np.logspace(math.log10(n), 0, points), decades])).astype(int))
    return [[float(a[n - k]), k / n] for k in above[::-1]]


def quantile_ci(values, q, confidence=CONFIDENCE):
    """A distribution-free confidence interval for the q-quantile (0..1) from order statistics.

    The number of samples below the true quantile is Binomial(n, q), so [x_(l), x_(u)] with l and
    u its two-sided bounds covers it with at least `confidence` (exactly, for continuous data),
    assuming independent samples. None when n is too small for any interval; the upper end is
    None when the sample is too small to bound it (e.g. p99 of 50 requests).
    """
    a = np.sort(_array(values))
    n = a.size
    if n < 2:
        return None
    alpha = 1.0 - confidence
    low = int(sps.binom.ppf(alpha / 2, n, q))            # 1-based rank: P(B <= low - 1) <= alpha/2
    high = int(sps.binom.ppf(1 - alpha / 2, n, q)) + 1   # P(B >= high) <= alpha/2
    return [float(a[low - 1]) if low >= 1 else None, float(a[high - 1]) if high <= n else None]


def quantile_ci_coverage(n, q, confidence=CONFIDENCE):
    """The exact coverage of quantile_ci's ranks for n samples (for the tests and the README)."""
    alpha = 1.0 - confidence
    low = int(sps.binom.ppf(alpha / 2, n, q))
    high = int(sps.binom.ppf(1 - alpha / 2, n, q)) + 1
    return float(sps.binom.cdf(high - 1, n, q) - sps.binom.cdf(low - 1, n, q))


def median_against(values, target, confidence=0.9):
    """Whether the median of paired measurements (ratios, one a pair) is at most `target`:
    {"median", "interval", "coverage", "verdict"}. The interval is quantile_ci's for the median
    (for 5 pairs and the default confidence, the lowest and the highest value, covering the true
    median with 94 %); the verdict is "met" when all of it is at most the target, "not met" when
    all of it is above, and "undecided" when it straddles the target or there are too few pairs
    to have one: the noise is then larger than the distance to the target."""
    a = np.sort(_array(values))
    interval = quantile_ci(a, 0.5, confidence) or [None, None]
    low, high = interval
    if high is not None and high <= target:
        verdict = "met"
    elif low is not None and low > target:
        verdict = "not met"
    else:
        verdict = "undecided"
    return {"median": float(np.median(a)) if a.size else None, "interval": interval,
            "coverage": quantile_ci_coverage(a.size, 0.5, confidence) if a.size else 0.0, "verdict": verdict}


def bucket_width(duration):
    """The timeline's bucket width for a phase of `duration` s: sub-second for short phases."""
    for width in BUCKET_WIDTHS:
        if duration / width <= MAX_BUCKETS:
            return width
    return BUCKET_WIDTHS[-1]


def timeline(events, duration, width=None):
    """Buckets of (completion time in s from the phase start, ok, latency ms) events.

    Only whole buckets are kept: the last partial one would be drawn as a collapse of throughput
    that never happened. Each bucket has its start `t`, width `dt`, `ok`, `errors` and the median
    and p99 latency of what completed in it. Events before 0 go in the first bucket.
    """
    width = width or bucket_width(duration)
    if duration < width:
        width = max(duration, 1e-3)
    count = max(1, int(math.floor(duration / width + 1e-9)))
    buckets = [{"t": round(i * width, 6), "dt": width, "ok": 0, "errors": 0, "latencies": []} for i in range(count)]
    for done_at, ok, latency_ms in events:
        i = int(max(done_at, 0.0) // width)
        if i >= count:
            continue
        b = buckets[i]
        b["ok" if ok else "errors"] += 1
        b["latencies"].append(latency_ms)
    for b in buckets:
        lat = b.pop("latencies")
        b["p50_ms"] = percentile(lat, 50)
        b["p99_ms"] = percentile(lat, 99)
    return buckets


def spread(values, confidence=CONFIDENCE):
    """Mean, stdev and a confidence interval of the mean over repeats (Student t; stdev/CI None for one run)."""
    a = _array(values)
    n = a.size
    if n == 0:
        return {"n": 0, "mean": None, "stdev": None, "ci95": None}
    mean = float(a.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "stdev": None, "ci95": None}
    sd = float(a.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "stdev": sd, "ci95": [mean - half, mean + half]}


def welch(a, b, alpha=0.05):
    """Welch's two-sample t-test over per-run values: {"t", "df", "p", "significant"}.

    p is None when either side has fewer than 2 values. Identical repeats on both sides (no
    variance at all) give p = 1 when the means are equal, else 0: the difference is exact.
    """
    a, b = _array(a), _array(b)
    if a.size < 2 or b.size < 2:
        return {"t": None, "df": None, "p": None, "significant": None}
    if a.var(ddof=1) + b.var(ddof=1) == 0:
        p = 1.0 if a.mean() == b.mean() else 0.0
        return {"t": None, "df": None, "p": p, "significant": p < alpha}
    with warnings.catch_warnings():
        # Nearly identical repeats: scipy warns of precision loss, and the p-value is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(a, b, equal_var=False)
    p = float(res.pvalue)
    return {"t": float(res.statistic), "df": float(res.df), "p": p, "significant": p < alpha}


def holm(pvalues, alpha=0.05):
    """Holm's step-down adjusted p-values for a family of tests (None entries are left out).

    Returns (adjusted, significant) lists aligned with `pvalues`: the family-wise error rate
    stays under alpha however many pairs and metrics the report compares.
    """
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted, [None if p is None else p < alpha for p in adjusted]
