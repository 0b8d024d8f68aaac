"""The Markdown report and the plots, drawn from a golden result file (tests/golden/)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.analysis import results
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
    assert ("| burst | throughput (req/s) | FIFO@autoscale: 26.7 | FIFO@fixed: 18.0 | 8.6 (48%) "
            "| no test (1 run(s); set repeat >= 2) |") in text
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
    assert p99["significant"] is True
    assert wins[("closed", "throughput (req/s)")]["best"] in ("FIFO", "LEAST")
    assert "| closed | p99 latency (ms) | LEAST: 10.2 | FIFO: 51.0 | 40.8 (80%) | **yes**" in report.render(three)
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
    assert sorted(os.path.basename(p) for p in paths) == ["latency_cdf.png", "throughput.png",
                                                          "timeline.png", "workers.png"]
    for p in paths:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == PNG_MAGIC and os.path.getsize(p) > 5000


def test_unknown_format_version_is_refused(tmp_path):
    data = json.load(open(GOLDEN))
    data["format_version"] = 99
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(results.ResultError, match="format_version 99 is not supported"):
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
    for name in ("report.md", "throughput.png", "latency_cdf.png", "timeline.png", "workers.png"):
        assert (tmp_path / name).stat().st_size > 0
    bad = tmp_path / "old.json"
    bad.write_text('{"format_version": 0}')
    proc = subprocess.run([sys.executable, "-m", "harness.render", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "format_version 0 is not supported" in proc.stderr
