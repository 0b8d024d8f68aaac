"""The Markdown report and the plots, drawn from a golden result file (tests/golden/)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.analysis import results, stats, sweep
from harness.render import plots, report

from support import ROOT  # noqa: E402
GOLDEN = os.path.join(ROOT, "tests", "golden", "result-tiny.json")
# A real burst run: FIFO on a fixed pool of 2 against auto-scaling 1..4, with the pool polled.
BURST = os.path.join(ROOT, "tests", "golden", "result-burst.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def golden():
    return results.load(GOLDEN)


def test_report_has_the_golden_figures(golden):
    text = report.render(golden)
    assert text.startswith("# Scenario `tiny`")
    assert "## Phase `closed`" in text and "## Phase `open`" in text
    # RR, closed phase: 2 runs, 40 requests, all ok; throughput 27.187 and 40.125 req/s.
    assert "| RR | closed | 2 | 40 | 40 | 0 | 33.7 ± 9.1 |" in text
    assert "| FIFO | closed | 2 | 40 | 40 | 0 | 46.1 ± 10.1 |" in text
    # Open phase: 14 + 22 requests, none late.
    assert "| RR | open | 2 | 36 | 36 | 0 | 13.3 ± 4.5 |" in text
    assert "| greet | RR | 78.4 | True | 12.6 | yes |" in text
    assert "Per-worker load, FIFO: worker 0: 21, worker 1: 19" in text
    assert "throughput (req/s), RR vs FIFO: 33.7 vs 46.1: not significant" in text
    assert "commit 9e0c2fd72909" in text


def test_comparison_says_when_a_difference_is_significant(golden):
    fake = json.loads(json.dumps(golden))
    runs = fake["strategies"]["FIFO"]["phases"]["closed"]["runs"]
    for r, p99 in zip(runs, (10.0, 10.5)):
        r["latency_ms"]["p99"] = p99
    for r, p99 in zip(fake["strategies"]["RR"]["phases"]["closed"]["runs"], (90.0, 91.0)):
        r["latency_ms"]["p99"] = p99
    text = report.render(fake)
    assert "p99 latency (ms), RR vs FIFO: 90.5 vs 10.2: **significant**" in text
    assert "FIFO is better" in text
    single = json.loads(json.dumps(golden))
    for s in ("RR", "FIFO"):
        del single["strategies"][s]["phases"]["closed"]["runs"][1]
    assert "no test: 1 run(s) each" in report.render(single)


def test_failures_are_reported(golden):
    failed = json.loads(json.dumps(golden))
    failed["ok"] = False
    failed["errors"] = ["RR: deploy of greet failed: toolchain missing"]
    failed["strategies"]["RR"]["phases"]["closed"] = {"kind": "closed", "runs": [], "skipped": "not deployed: greet"}
    text = report.render(failed)
    assert "## Failures" in text and "deploy of greet failed: toolchain missing" in text
    assert "| RR | | 0 | | | | not deployed: greet |" in text


def test_burst_report_compares_the_stacks_and_their_pools():
    text = report.render(results.load(BURST))
    assert "strategies: FIFO@fixed, FIFO@autoscale; repeat: 1" in text and "Workers: 4" not in text
    assert "- `FIFO@autoscale`: strategy FIFO, executor local, max_workers 4, min_workers 1" in text
    # Mean pool size over the phase and its max, from the polled timeline.
    assert "| FIFO@fixed | open | 1 | 239 | 239 | 0 | 18.0 |" in text and "| 0 | 2.0 (2) |" in text
    assert "| 0 | 3.8 (4) |" in text
    # A version 1 file does not say whether an open phase kept up, so its throughput (the
    # offered rate, unless the platform fell behind) is not crowned.
    assert "| burst | throughput (req/s) |" not in text
    assert "| burst | p99 latency (ms) | FIFO@autoscale:" in text
    assert "| quiet | mean workers (cost) | FIFO@autoscale: 1.0 | FIFO@fixed: 2.0 | 1.0 (50%) |" in text
    assert "`workers_over_time.png`" in text


def test_who_wins_names_the_best_and_tests_it_against_the_runner_up(golden):
    three = json.loads(json.dumps(golden))
    three["scenario"]["strategies"].append("LEAST")
    three["strategies"]["LEAST"] = json.loads(json.dumps(golden["strategies"]["FIFO"]))
    for name, p99s in (("RR", (90.0, 91.0)), ("FIFO", (50.0, 52.0)), ("LEAST", (10.0, 10.5))):
        for r, p99 in zip(three["strategies"][name]["phases"]["closed"]["runs"], p99s):
            r["latency_ms"]["p99"] = p99
    wins = {(w["phase"], w["metric"]): w for w in report.winners(three)}
    p99 = wins[("closed", "p99 latency (ms)")]
    assert (p99["best"], p99["second"], p99["margin"]) == ("LEAST", "FIFO", pytest.approx(40.75))
    # Alone it would pass (p = 0.0105), but it is one of the table's five tests: Holm makes it 0.052.
    assert p99["p"] == pytest.approx(0.010485, rel=1e-3) and p99["p_holm"] == pytest.approx(5 * p99["p"])
    assert p99["significant"] is False
    assert wins[("closed", "throughput (req/s)")]["best"] in ("FIFO", "LEAST")
    assert "| closed | p99 latency (ms) | LEAST: 10.2 | FIFO: 51.0 | 40.8 (80%) | no (p = 0.0105, Holm 0.0524)" in (
        report.render(three))
    # Consistent repeats pass even after the correction.
    for r, p99 in zip(three["strategies"]["FIFO"]["phases"]["closed"]["runs"], (50.0, 50.5)):
        r["latency_ms"]["p99"] = p99
    assert "| closed | p99 latency (ms) | LEAST: 10.2 | FIFO: 50.2 | 40.0 (80%) | **yes** (p = 7.81e-05, Holm 0.000391)" in (
        report.render(three))
    # The old golden file has no pool timeline: no cost row, no workers_over_time plot.
    assert ("closed", "mean workers (cost)") not in wins


def test_workers_over_time_plot_from_the_burst_golden(tmp_path):
    burst = results.load(BURST)
    assert plots.has_pool_timeline(burst)
    sequence, total = plots._sequence(burst, "FIFO@autoscale", 0)
    assert [phase for _, phase, _ in sequence] == ["quiet", "burst", "after"]
    assert sequence[1][0] == pytest.approx(sequence[0][2]["duration_s"]) and total > 15
    paths = plots.draw_all(burst, str(tmp_path))
    assert "workers_over_time.png" in [os.path.basename(p) for p in paths]
    with open(tmp_path / "workers_over_time.png", "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_plots_are_png_files(golden, tmp_path):
    paths = plots.draw_all(golden, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["latency_ccdf.png", "per_function_p99.png",
                                                          "throughput.png", "timeline.png", "workers.png"]
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == PNG_MAGIC and os.path.getsize(p) > 5000


def test_unknown_format_version_is_refused(tmp_path):
    data = json.load(open(GOLDEN))
    data["format_version"] = 99
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(results.ResultError, match="format_version 99 is not supported .this harness reads versions 1, 2"):
        results.load(str(path))


def test_write_then_load_round_trips_with_sorted_keys(golden, tmp_path):
    path = results.write(golden, str(tmp_path))
    text = open(path).read()
    assert results.load(path) == golden
    assert text.index('"errors"') < text.index('"format_version"') < text.index('"metadata"')


def test_report_command_redraws_from_a_result_file(tmp_path):
    shutil.copy(GOLDEN, tmp_path / "result.json")
    proc = subprocess.run([sys.executable, "-m", "harness.render", str(tmp_path / "result.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("report.md", "throughput.png", "latency_ccdf.png", "timeline.png", "workers.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 0
    bad = tmp_path / "old.json"
    bad.write_text('{"format_version": 0}')
    proc = subprocess.run([sys.executable, "-m", "harness.render", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "format_version 0 is not supported" in proc.stderr


# -- a version 2 result with a sweep (tests/golden/result-sweep.json, a real run of RR and FIFO
# on 2 workers, twice each, in the order RR FIFO FIFO RR) ---------------------------------------

SWEEP = os.path.join(ROOT, "tests", "golden", "result-sweep.json")


@pytest.fixture
def swept():
    return results.load(SWEEP)


def test_the_report_opens_with_capacity_per_strategy_and_a_verdict(swept):
    text = report.render(swept)
    assert swept["format_version"] == 2
    assert text.index("## Capacity at the SLO") < text.index("## Who wins") < text.index("## Phase `closed`")
    for s in ("RR", "FIFO"):
        runs = swept["strategies"][s]["phases"]["capacity"]["runs"]
        caps = [r["capacity_rps"] for r in runs]
        agg = swept["strategies"][s]["phases"]["capacity"]["aggregate"]["capacity_rps"]
        assert agg["mean"] == pytest.approx(sum(caps) / len(caps)) and agg["n"] == 2
        # Capacity of each run follows from its own steps.
        for r in runs:
            assert sweep.capacity(r["steps"], r["slo_p99_ms"])["capacity_rps"] == r["capacity_rps"]
    # One run's first step missed the SLO (0: below the lowest rate), the other met every step.
    assert ("| capacity | RR | 150 | 40.0 ± 56.6 | [0.0, 548.2] | 2 | at least (every step met the SLO); "
            "below the lowest rate |") in text
    assert "- `capacity`: **RR** reaches 40.0 req/s, FIFO 40.0 (+0%): not shown by the repeats" in text
    assert swept["scenario"]["order"] == [["RR", 0], ["FIFO", 0], ["FIFO", 1], ["RR", 1]]


def test_sweep_steps_and_flags_are_in_the_report(swept):
    text = report.render(swept)
    assert "| RR | 80.0 | 2 | 68.7 ± 1.9 | 49.9 ± 57.1 | 191.9 ± 180.0 | 1 |" in text
    assert "| FIFO | 80.0 | 2 | 74.7 ± 6.6 | 25.8 ± 3.4 | 72.2 ± 1.6 | 0 |" in text
    # Every run records the machine and the injector; flagged runs are listed with the reason.
    run = swept["strategies"]["FIFO"]["phases"]["open"]["runs"][1]
    assert run["injector"]["late_share"] == pytest.approx(run["late"] / run["requests"])
    assert set(run["host"]) >= {"loadavg_before", "loadavg_after", "busy_before", "steal_share", "flags"}
    assert "| FIFO | open | 2 | 26.1% of requests sent late; the machine was 100% busy just before the run |" in text
    clean = json.loads(json.dumps(swept))
    for s in clean["strategies"].values():
        for entry in s["phases"].values():
            for r in entry["runs"]:
                r["host"]["flags"], r["injector"]["limited"] = [], []
    assert "## Runs to read with care" not in report.render(clean)


def test_open_phases_compare_throughput_only_when_a_run_fell_behind(swept):
    kept_up = json.loads(json.dumps(swept))
    for s in kept_up["strategies"].values():
        for r in s["phases"]["open"]["runs"]:
            r["saturated"] = False
    rows = {(w["phase"], w["metric"]) for w in report.winners(kept_up)}
    assert ("open", "throughput (req/s)") not in rows and ("closed", "throughput (req/s)") in rows
    assert ("open", "p99 latency (ms)") in rows
    assert not any(c["phase"] == "open" and c["metric"].startswith("throughput") for c in report.compare(kept_up))
    # A sweep compares capacity, never its throughput (which is the offered rate of each step).
    assert ("capacity", "capacity at the SLO (req/s)") in rows and ("capacity", "throughput (req/s)") not in rows
    behind = json.loads(json.dumps(kept_up))
    behind["strategies"]["RR"]["phases"]["open"]["runs"][0]["saturated"] = True
    assert ("open", "throughput (req/s)") in {(w["phase"], w["metric"]) for w in report.winners(behind)}


def test_comparisons_are_holm_corrected_over_the_whole_report(swept):
    found = report.compare(swept)
    raw = [c["p"] for c in found]
    adjusted, _ = stats.holm(raw)
    assert [c["p_holm"] for c in found] == adjusted
    assert all(c["p_holm"] is None or c["p_holm"] >= c["p"] for c in found)
    assert "Holm-corrected over every pair, phase and metric" in report.render(swept)


def test_sweep_plots_from_the_golden(swept, tmp_path):
    paths = plots.draw_all(swept, str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["latency_ccdf.png", "per_function_p99.png", "sweep_latency.png", "sweep_throughput.png",
                     "throughput.png", "timeline.png", "workers.png", "workers_over_time.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC
    # The CCDF reaches the slowest request of a run; version 1 files fall back to their quantiles.
    run = swept["strategies"]["RR"]["phases"]["capacity"]["runs"][0]
    xs, ys = plots.ccdf_points(run)
    assert xs[-1] == pytest.approx(run["latency_ms"]["max"]) and ys[-1] == pytest.approx(1 / run["ok"])
    old = results.load(GOLDEN)["strategies"]["RR"]["phases"]["closed"]["runs"][0]
    xs, ys = plots.ccdf_points(old)
    assert len(xs) == 100 and ys[0] == 1.0 and ys[-1] == pytest.approx(0.01)


def test_timelines_have_whole_sub_second_buckets(swept):
    for s in swept["strategies"].values():
        for entry in s["phases"].values():
            for r in entry["runs"]:
                buckets = r["timeline"]
                dt = buckets[0]["dt"]
                assert dt < 1.0 and all(b["dt"] == dt for b in buckets)
                assert buckets[-1]["t"] + dt <= r["duration_s"] + 1e-6


def test_a_sweep_is_compared_by_capacity_alone(swept):
    # Its runs' latencies pool the steps each reached: not comparable, and not in Holm's family.
    assert {w["metric"] for w in report.winners(swept) if w["phase"] == "capacity"} == {report.CAPACITY}
    assert {c["metric"] for c in report.compare(swept) if c["phase"] == "capacity"} == {report.CAPACITY}


def test_a_function_that_never_answered_is_not_ranked(swept):
    broken = json.loads(json.dumps(swept))
    for s in broken["strategies"].values():      # the golden's one mix of two functions, as open
        s["phases"]["capacity"]["kind"] = "open"
    for r in broken["strategies"]["RR"]["phases"]["capacity"]["runs"]:
        r["per_function"]["wait"]["latency_ms"] = stats.latency_summary([])
    rows = {(w["phase"], w["metric"]) for w in report.winners(broken)}
    assert ("capacity", "p99 latency of wait (ms)") not in rows
    assert ("capacity", "p99 latency of greet (ms)") in rows
    assert "## Who wins" in report.render(broken)
