"""The trace readers on small synthetic files: azure2021 rows, and azure2019's per-minute counts
in both layouts (the dataset's and InVitro's), spread over each minute with durations drawn
from each function's percentiles."""

import collections
import os

import pytest

from harness.load import traces

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scenarios", "traces")

# Three functions over 5 minutes; f3 is busy, f2 quiet, f1 has a burst in minute 4.
COUNTS = {
    ("o1", "a1", "f1"): [0, 1, 0, 7, 2],
    ("o2", "a2", "f2"): [1, 0, 0, 0, 1],
    ("o2", "a2", "f3"): [30, 25, 41, 38, 29],
}
# ms: percentiles 0, 1, 25, 50, 75, 99, 100, then Minimum, Maximum
DURATIONS = {
    ("o1", "a1", "f1"): ([100, 110, 150, 200, 300, 900, 1000], 95.0, 1000.0),
    ("o2", "a2", "f2"): ([5, 5, 5, 5, 5, 5, 5], 5.0, 5.0),
    ("o2", "a2", "f3"): ([10, 12, 20, 40, 80, 2000, 5000], 8.0, 6000.0),
}
PERCENTS = (0, 1, 25, 50, 75, 99, 100)


def key(k):
    return "/".join(k)


def write_counts(path, layout, counts=COUNTS):
    minutes = len(next(iter(counts.values())))
    with open(path, "w") as f:
        if layout == "azure":
            f.write("HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(m + 1) for m in range(minutes)) + "\n")
            for (o, a, fn), row in counts.items():
                f.write("%s,%s,%s,http,%s\n" % (o, a, fn, ",".join(map(str, row))))
        else:
            f.write("HashFunction,HashOwner,HashApp," + ",".join("minute_%d" % (m + 1) for m in range(minutes)) + "\n")
            for (o, a, fn), row in counts.items():
                f.write("%s,%s,%s,%s\n" % (fn, o, a, ",".join(map(str, row))))
    return path


def write_durations(path, durations=DURATIONS):
    with open(path, "w") as f:
        f.write("HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
                + ",".join("percentile_Average_%d" % p for p in PERCENTS) + "\n")
        for (o, a, fn), (points, lo, hi) in durations.items():
            f.write("%s,%s,%s,%d,%d,%s,%s,%s\n" % (o, a, fn, points[3], 100, lo, hi, ",".join(map(str, points))))
    return path


@pytest.fixture(params=["azure", "invitro"])
def trace(request, tmp_path):
    """A counts file in one layout, with its durations file where the default looks for it."""
    if request.param == "azure":
        counts = write_counts(tmp_path / "invocations_per_function_md.anon.d01.csv", "azure")
        write_durations(tmp_path / "function_durations_percentiles.anon.d01.csv")
    else:
        counts = write_counts(tmp_path / "5_inv.csv", "invitro")
        write_durations(tmp_path / "5_run.csv")
    return str(counts)


def counted(invocations):
    out = collections.defaultdict(lambda: collections.Counter())
    for inv in invocations:
        out[inv.func][int(inv.at // 60)] += 1
    return out


# -- azure2019 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arrivals", traces.ARRIVALS)
def test_every_minute_keeps_exactly_its_count_in_both_layouts(trace, arrivals):
    invocations = traces.read(trace, "azure2019", arrivals=arrivals, seed=3)
    got = counted(invocations)
    for k, row in COUNTS.items():
        assert dict(got[key(k)]) == {m: n for m, n in enumerate(row) if n}
    assert invocations == sorted(invocations)
    assert all(0 <= inv.at < 5 * 60 for inv in invocations)


def test_both_layouts_give_the_same_invocations(tmp_path):
    write_durations(tmp_path / "d.csv")
    a = traces.read(str(write_counts(tmp_path / "a.csv", "azure")), "azure2019", durations=str(tmp_path / "d.csv"))
    b = traces.read(str(write_counts(tmp_path / "b.csv", "invitro")), "azure2019", durations=str(tmp_path / "d.csv"))
    assert a == b and len(a) == sum(map(sum, COUNTS.values()))


def test_spreading_is_reproducible_by_seed_and_changes_with_it(trace):
    one = traces.read(trace, "azure2019", seed=7)
    assert one == traces.read(trace, "azure2019", seed=7)
    other = traces.read(trace, "azure2019", seed=8)
    assert [i.at for i in one] != [i.at for i in other]


def test_equidistant_spacing_and_poisson_spreads_the_whole_minute(trace):
    eq = [i.at for i in traces.read(trace, "azure2019", arrivals="equidistant") if i.func == "o2/a2/f3"]
    first_minute = [t for t in eq if t < 60]
    assert first_minute == pytest.approx([(i + 0.5) * 2.0 for i in range(30)])
    # 163 calls of f3 spread at random: both halves of its minutes get some, unlike a burst.
    po = [i.at % 60 for i in traces.read(trace, "azure2019", arrivals="poisson") if i.func == "o2/a2/f3"]
    assert 40 < sum(t < 30 for t in po) < 123


def test_spread_gaps_differ_by_kind():
    import random
    import statistics
    rng = random.Random(1)

    def cv(kind):
        gaps = []
        for _ in range(200):
            ts = traces.spread(50, rng, kind)
            gaps += [b - a for a, b in zip(ts, ts[1:])]
        return statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv("equidistant") == pytest.approx(0.0, abs=1e-9)
    assert cv("uniform") == pytest.approx(0.577, abs=0.06)     # U(0,1) gaps: 1/sqrt(3)
    assert cv("poisson") == pytest.approx(1.0, abs=0.08)       # exponential gaps


def test_window_keeps_only_its_minutes_counted_from_its_start_and_moves_nothing(trace):
    full = traces.read(trace, "azure2019", seed=5)
    window = traces.read(trace, "azure2019", seed=5, minutes=[2, 4])
    got = counted(window)
    for k, row in COUNTS.items():
        assert dict(got[key(k)]) == {m - 1: row[m] for m in (1, 2, 3) if row[m]}
    shifted = sorted((round(i.at + 60.0, 9), i.func, i.duration) for i in window)
    assert shifted == sorted((round(i.at, 9), i.func, i.duration) for i in full if 60 <= i.at < 240)


def test_bad_window_and_arrivals_are_refused(trace):
    with pytest.raises(ValueError, match="minutes"):
        traces.read(trace, "azure2019", minutes=[3, 2])
    with pytest.raises(ValueError, match="arrivals"):
        traces.read(trace, "azure2019", arrivals="bursty")
    with pytest.raises(ValueError, match="azure2021 takes no options"):
        traces.read(trace, "azure2021", seed=1)


def test_function_sample_is_seeded_and_only_leaves_functions_out(trace):
    full = traces.read(trace, "azure2019", seed=2)
    sample = traces.read(trace, "azure2019", seed=2, functions_sample=2)
    chosen = {i.func for i in sample}
    assert len(chosen) == 2
    assert sample == [i for i in full if i.func in chosen]
    assert sample == traces.read(trace, "azure2019", seed=2, functions_sample=2)
    picks = {frozenset(i.func for i in traces.read(trace, "azure2019", seed=s, functions_sample=1))
             for s in range(12)}
    assert len(picks) > 1      # the seed picks, not the file order
    assert len(traces.read(trace, "azure2019", functions_sample=10)) == len(full)


def test_durations_lie_within_each_functions_extremes_and_follow_its_percentiles(trace):
    by_fn = collections.defaultdict(list)
    for inv in traces.read(trace, "azure2019", seed=11):
        by_fn[inv.func].append(inv.duration * 1000.0)
    for k, (points, lo, hi) in DURATIONS.items():
        assert all(lo <= d <= hi for d in by_fn[key(k)]), k
    assert by_fn["o2/a2/f2"] == [5.0] * 2
    f3 = sorted(by_fn["o2/a2/f3"])    # 163 draws: the median sits between p25 and p75
    assert 20 <= f3[len(f3) // 2] <= 80


def test_draw_inverts_the_percentile_curve():
    import random
    d = traces.Durations(points=((0, 0.0), (50, 10.0), (100, 110.0)))
    rng = random.Random(1)
    draws = sorted(d.draw(rng) for _ in range(20000))
    assert draws[len(draws) // 2] == pytest.approx(10.0, abs=0.5)
    assert draws[len(draws) // 4] == pytest.approx(5.0, abs=0.3)
    assert draws[3 * len(draws) // 4] == pytest.approx(60.0, abs=3.0)
    assert draws[0] >= 0.0 and draws[-1] <= 110.0
    clamped = traces.Durations(points=((0, 1.0), (100, 100.0)), minimum=20.0, maximum=30.0)
    assert all(20.0 <= clamped.draw(random.Random(s)) <= 30.0 for s in range(200))


def test_functions_without_durations_are_left_out(tmp_path):
    counts = write_counts(tmp_path / "x_inv.csv", "invitro")
    write_durations(tmp_path / "x_run.csv", {k: v for k, v in DURATIONS.items() if k[2] != "f1"})
    funcs = {i.func for i in traces.read(str(counts), "azure2019")}
    assert funcs == {"o2/a2/f2", "o2/a2/f3"}


def test_default_durations_file_follows_each_naming():
    assert traces.durations_path("/t/100_inv.csv") == "/t/100_run.csv"
    assert (traces.durations_path("/t/invocations_per_function_md.anon.d03.csv")
            == "/t/function_durations_percentiles.anon.d03.csv")
    with pytest.raises(ValueError):
        traces.durations_path("/t/counts.csv")


def test_a_file_that_is_not_a_counts_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad_inv.csv"
    bad.write_text("app,func,end_timestamp,duration\na,b,1,1\n")
    write_durations(tmp_path / "bad_run.csv")
    with pytest.raises(ValueError, match="bad_inv.csv"):
        traces.read(str(bad), "azure2019")


def test_shipped_sample_reads_with_its_published_shape():
    path = os.path.join(SHIPPED, "azure2019_100_inv.csv")
    invocations = traces.read(path, "azure2019", minutes=[1, 10], seed=0)
    assert len({i.func for i in invocations}) <= 100
    assert 300 < len(invocations) < 2000       # about 60 calls a minute over the 100 functions
    # A few of the sample's functions ran in under a millisecond: the trace says 0 ms.
    assert all(i.duration >= 0 for i in invocations)
    assert sorted(i.duration for i in invocations)[len(invocations) // 2] > 0.001


# -- azure2021 and the replay ------------------------------------------------------------------

def test_azure2021_rows_start_at_end_minus_duration(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("app,func,end_timestamp,duration\na,f,10.0,2.0\na,g,5.0,1.0\nb,f,9.0,0.5\n")
    got = traces.read(str(path))
    assert [(i.at, i.func) for i in got] == [(0.0, "a/g"), (4.0, "a/f"), (4.5, "b/f")]


def test_schedule_compresses_time_and_maps_stably():
    invs = [traces.Invocation(at=60.0 * i, func="o/a/f%d" % i, duration=1.0) for i in range(20)]
    plan = traces.schedule(invs, ["x", "y"], speedup=60.0)
    assert [p[0] for p in plan] == [float(i) for i in range(20)]
    assert {p[1] for p in plan} == {"x", "y"}
    assert plan == traces.schedule(invs, ["x", "y"], speedup=60.0)
    assert len(traces.schedule(invs, ["x"], limit=5)) == 5


# -- the scenario format -----------------------------------------------------------------------

def parse_phase(tmp_path, **fields):
    from harness.run import scenario
    src = tmp_path / "f.c"
    src.write_text("int main(void) { return 0; }\n")
    phase = {"name": "t", "kind": "trace", "functions": ["f"], **fields}
    raw = {"name": "t", "functions": [{"name": "f", "lang": "c", "source": str(src)}], "phases": [phase]}
    return scenario.parse(raw, str(tmp_path / "t.toml")).phases[0]


def test_scenario_reads_an_azure2019_phase_and_finds_its_durations(tmp_path):
    counts = write_counts(tmp_path / "9_inv.csv", "invitro")
    write_durations(tmp_path / "9_run.csv")
    phase = parse_phase(tmp_path, file=str(counts), format="azure2019", minutes=[2, 3],
                        functions_sample=2, arrivals="uniform", seed=4, model=True, count="warm")
    assert phase.durations == str(tmp_path / "9_run.csv")
    assert (phase.minutes, phase.functions_sample, phase.arrivals, phase.seed) == ([2, 3], 2, "uniform", 4)
    assert phase.model is True and phase.count == "warm"
    got = traces.phase_invocations(phase)
    assert got == traces.read(str(counts), "azure2019", minutes=[2, 3], functions_sample=2,
                              arrivals="uniform", seed=4)


@pytest.mark.parametrize("fields,message", [
    ({"minutes": [5, 2]}, "minutes"),
    ({"minutes": [1]}, "minutes"),
    ({"arrivals": "bursty"}, "arrivals"),
    ({"functions_sample": 0}, "functions_sample"),
    ({"count": "hot"}, "count"),
    ({"model": "yes"}, "model"),
])
def test_scenario_refuses_bad_azure2019_options_naming_the_field(tmp_path, fields, message):
    from harness.run import scenario
    counts = write_counts(tmp_path / "9_inv.csv", "invitro")
    write_durations(tmp_path / "9_run.csv")
    with pytest.raises(scenario.ScenarioError, match=message):
        parse_phase(tmp_path, file=str(counts), format="azure2019", **fields)


def test_scenario_refuses_azure2019_options_on_azure2021_and_a_missing_durations_file(tmp_path):
    from harness.run import scenario
    rows = tmp_path / "t.csv"
    rows.write_text("app,func,end_timestamp,duration\na,f,1,1\n")
    with pytest.raises(scenario.ScenarioError, match="azure2019"):
        parse_phase(tmp_path, file=str(rows), format="azure2021", minutes=[1, 2])
    counts = write_counts(tmp_path / "8_inv.csv", "invitro")
    with pytest.raises(scenario.ScenarioError, match="8_run.csv"):
        parse_phase(tmp_path, file=str(counts), format="azure2019")


def test_duration_input_is_whole_ms_compressed_capped_and_never_zero():
    assert traces.duration_input_ms(2.0, 20.0, 1000.0) == 100
    assert traces.duration_input_ms(60.0, 1.0, 250.0) == 250
    assert traces.duration_input_ms(0.0, 24.0, 50.0) == 1


def test_the_runner_replays_an_azure2019_window_with_each_calls_trace_function(tmp_path):
    import json
    from harness.run import runner, scenario
    sc = scenario.load(os.path.join(os.path.dirname(SHIPPED), "azure2019.toml"))
    phase = sc.phases[0]
    tags = []
    items = runner.trace_items(phase, sc, {f.name: f.name + "_id" for f in sc.functions}, tags)
    invs = traces.phase_invocations(phase)
    assert len(items) == len(tags) == len(invs) > 0
    assert tags == [traces.short_name(i.func) for i in invs]
    wall = (phase.minutes[1] - phase.minutes[0] + 1) * 60.0 / phase.speedup
    assert all(0 <= offset < wall for offset, *_ in items)
    asked = [int(json.loads(payload)["input"]) for *_, payload in items]
    assert min(asked) >= 1 and max(asked) <= phase.max_input_ms
