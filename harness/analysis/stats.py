"""Statistics for the harness: percentiles, per-second timelines, spread and significance.

Standard library only (`statistics`, `math`): the Student t distribution is computed here
through the regularized incomplete beta function, so Welch's test needs no scipy.
"""

import math
import statistics

PERCENTILES = (50, 90, 99)


def percentile(sorted_values, p):
    """The p-th percentile (0..100) of already sorted values, interpolating linearly (numpy's default)."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def latency_summary(latencies_ms):
    """p50/p90/p99/max/mean of latencies in ms (None for each when there is none)."""
    values = sorted(latencies_ms)
    summary = {"p%d" % p: percentile(values, p) for p in PERCENTILES}
    summary["max"] = values[-1] if values else None
    summary["mean"] = statistics.fmean(values) if values else None
    return summary


def quantiles(latencies_ms, points=101):
    """`points` evenly spaced quantiles from min to max: a compact latency distribution for CDF plots."""
    values = sorted(latencies_ms)
    if not values:
        return []
    return [percentile(values, 100.0 * i / (points - 1)) for i in range(points)]


def timeline(events, duration):
    """Per-second buckets of (completion time in s from the phase start, ok, latency ms) events.

    Each bucket has the second `t`, `ok`, `errors` and the median and p99 latency of what
    completed in it, so a plot shows throughput over time and whether latency drifted.
    """
    seconds = max(1, math.ceil(duration))
    buckets = [{"t": t, "ok": 0, "errors": 0, "latencies": []} for t in range(seconds)]
    for done_at, ok, latency_ms in events:
        b = buckets[min(max(int(done_at), 0), seconds - 1)]
        b["ok" if ok else "errors"] += 1
        b["latencies"].append(latency_ms)
    for b in buckets:
        lat = sorted(b.pop("latencies"))
        b["p50_ms"] = percentile(lat, 50)
        b["p99_ms"] = percentile(lat, 99)
    return buckets


def spread(values):
    """Mean, stdev and a 95% confidence interval of the mean over repeats (stdev/CI None for one run)."""
    values = [v for v in values if v is not None]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "stdev": None, "ci95": None}
    mean = statistics.fmean(values)
    if n == 1:
        return {"n": 1, "mean": mean, "stdev": None, "ci95": None}
    sd = statistics.stdev(values)
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "stdev": sd, "ci95": [mean - half, mean + half]}


def welch(a, b, alpha=0.05):
    """Welch's two-sample t-test: {"t", "df", "p", "significant"}; p None when either side has < 2 values."""
    a = [v for v in a if v is not None]
    b = [v for v in b if v is not None]
    if len(a) < 2 or len(b) < 2:
        return {"t": None, "df": None, "p": None, "significant": None}
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        # Identical repeats on both sides: the difference is exact, or there is none.
        p = 1.0 if ma == mb else 0.0
        return {"t": None, "df": None, "p": p, "significant": p < alpha}
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = t_two_sided_p(t, df)
    return {"t": t, "df": df, "p": p, "significant": p < alpha}


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t, df):
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q, df):
    """The t value below which a fraction q of Student's t(df) lies, by bisection on the CDF."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b), by its continued fraction (Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(1.0 - x))
    # The fraction converges fast only on one side of the mean; use the symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a, b, x, eps=1e-14, tiny=1e-300):
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
