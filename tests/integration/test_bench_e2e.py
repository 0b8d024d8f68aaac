"""End to end on the real stack: `minifaas inject` and a short `minifaas bench` (Python only, no compiler)."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from support import started

from support import ROOT  # noqa: E402
GREET = os.path.join(ROOT, "examples", "greet.py")

TINY = """
name = "tiny"
description = "end-to-end test"
workers = 2
strategies = ["RR", "FIFO"]
repeat = 2

[[functions]]
name = "greet"
lang = "python"
source = "%s"
input = "e2e"

[[phases]]
name = "closed"
kind = "closed"
function = "greet"
threads = 2
requests = 6

[[phases]]
name = "open"
kind = "open"
rate = 8.0
duration = 1.0
mix = { greet = 1 }
senders = 4

[[phases]]
name = "sweep"
kind = "sweep"
mix = { greet = 1 }
rates = [4, 8]
step_duration = 1.5
warmup = 0.3
slo_p99_ms = 2000.0
""" % GREET

BROKEN = """
name = "broken"
workers = 1
strategies = ["RR"]

[[functions]]
name = "broken"
lang = "python"
source = "%s"

[[functions]]
name = "nonsense"
lang = "klingon"
source = "%s"

[[phases]]
kind = "closed"
function = "nonsense"
threads = 1
requests = 1

[[phases]]
name = "ok-part"
kind = "closed"
function = "broken"
threads = 1
requests = 3
""" % (GREET, GREET)


def bench(tmp_path, text, name):
    path = tmp_path / (name + ".toml")
    path.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "reference", "bench", str(path), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc, out / name


def test_bench_runs_rr_and_fifo_and_writes_everything(tmp_path):
    proc, out = bench(tmp_path, TINY, "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RR run 2/2 phase closed" in proc.stderr   # progress on stderr
    result = json.loads((out / "result.json").read_text())
    assert result["format_version"] == 2 and result["ok"] is True
    # A fresh stack per repeat, in the balanced order A B B A.
    assert result["scenario"]["order"] == [["RR", 0], ["FIFO", 0], ["FIFO", 1], ["RR", 1]]
    assert proc.stderr.count("starting a stack") == 4
    # Deployed once; the later stacks start on a copy of the functions tree (fresh processes,
    # cold first calls again, the same code for every column).
    assert proc.stderr.count("deploying greet") == 1
    assert [r["deploy"]["greet"].get("reused", False) for r in result["strategies"]["RR"]["stack_runs"]] == [False, True]
    assert all(r["cold"]["greet"]["ok"] for s in result["strategies"].values() for r in s["stack_runs"])
    assert set(result["metadata"]) >= {"date", "host", "cores", "python", "wasmtime", "git_commit"}
    for strategy in ("RR", "FIFO"):
        s = result["strategies"][strategy]
        assert s["deploy"]["greet"]["ok"] is True
        assert s["cold"]["greet"]["ok"] is True
        closed = s["phases"]["closed"]
        assert len(closed["runs"]) == 2
        for run in closed["runs"]:
            assert (run["requests"], run["ok"], run["errors"]) == (12, 12, {})
            assert sum(run["workers"].values()) == 12
            # Whole buckets only: what completed in the last partial one is in the totals, not the timeline.
            buckets = run["timeline"]
            assert 0 < sum(b["ok"] for b in buckets) <= 12
            assert run["duration_s"] - buckets[0]["dt"] < buckets[-1]["t"] + buckets[-1]["dt"] <= run["duration_s"] + 1e-6
            assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
            # The pool was polled while the phase ran: 2 workers, never more busy than exist.
            assert run["pool_timeline"] and run["pool"]["workers_max"] == 2
            assert all(0 <= p["busy"] <= p["workers"] <= 2 for p in run["pool_timeline"])
        assert closed["aggregate"]["requests"] == 24
        open_ = s["phases"]["open"]
        assert len(open_["runs"]) == 2
        for run in open_["runs"]:
            assert run["ok"] == run["requests"] > 0
            assert run["saturated"] in (True, False)
        for phase in ("closed", "open", "sweep"):
            for i, run in enumerate(s["phases"][phase]["runs"]):
                assert run["repeat"] == i
                assert run["host"]["loadavg_before"] and run["host"]["steal_share"] is not None
                assert 0 <= run["injector"]["cpu_share"] < 2 and "limited" in run["injector"]
        for run in s["phases"]["sweep"]["runs"]:
            assert [st["offered_rps"] for st in run["steps"]] in ([4.0, 8.0], [4.0])
            assert run["capacity_bound"] in ("interpolated", "at_least", "below")
            assert all(st["requests"] > 0 and st["ok"] <= st["requests"] for st in run["steps"])
        assert s["phases"]["sweep"]["aggregate"]["capacity_rps"]["n"] == 2
    # Both strategies saw the same open-loop arrivals (seeded by phase and run, not strategy).
    assert ([r["requests"] for r in result["strategies"]["RR"]["phases"]["open"]["runs"]]
            == [r["requests"] for r in result["strategies"]["FIFO"]["phases"]["open"]["runs"]])
    report = (out / "report.md").read_text()
    assert "| RR | closed | 2 | 24 | 24 | 0 |" in report
    assert "| FIFO | closed | 2 | 24 | 24 | 0 |" in report
    assert "## Capacity at the SLO" in report and "| sweep | RR | 2000 |" in report
    for png in ("throughput.png", "latency_ccdf.png", "timeline.png", "workers.png", "sweep_latency.png",
                "sweep_throughput.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


STACKS = """
name = "variants"
strategies = ["FIFO"]

[[stacks]]
label = "fixed"
workers = 1

[[stacks]]
label = "auto"
workers = 1
min_workers = 1
max_workers = 2
scale_cooldown = 0.5

[[functions]]
name = "greet"
lang = "python"
source = "%s"

[[phases]]
name = "closed"
kind = "closed"
function = "greet"
threads = 2
requests = 4
""" % GREET


def test_stack_variants_run_as_labelled_columns(tmp_path):
    proc, out = bench(tmp_path, STACKS, "variants")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FIFO@auto: starting a stack with 1 workers, auto-scaling 1..2" in proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["scenario"]["strategies"] == ["FIFO@fixed", "FIFO@auto"]
    assert result["scenario"]["stacks"]["FIFO@auto"]["max_workers"] == 2
    for key in ("FIFO@fixed", "FIFO@auto"):
        run = result["strategies"][key]["phases"]["closed"]["runs"][0]
        assert (run["requests"], run["ok"]) == (8, 8)
    fixed = result["strategies"]["FIFO@fixed"]["phases"]["closed"]["runs"][0]
    assert {p["workers"] for p in fixed["pool_timeline"]} == {1}
    auto = result["strategies"]["FIFO@auto"]["phases"]["closed"]["runs"][0]
    assert all(1 <= p["workers"] <= 2 for p in auto["pool_timeline"])
    assert (out / "workers_over_time.png").read_bytes()[:4] == b"\x89PNG"
    assert "- `FIFO@auto`: strategy FIFO" in (out / "report.md").read_text()


def test_a_failed_deploy_is_recorded_and_the_run_goes_on(tmp_path):
    proc, out = bench(tmp_path, BROKEN, "broken")
    assert proc.returncode == 1
    result = json.loads((out / "result.json").read_text())
    assert result["ok"] is False
    rr = result["strategies"]["RR"]
    assert rr["deploy"]["nonsense"]["ok"] is False
    assert any("deploy of nonsense failed" in e for e in result["errors"])
    assert rr["phases"]["phase1"]["skipped"] == "not deployed: nonsense"
    # The phase whose function did deploy still ran.
    assert rr["phases"]["ok-part"]["runs"][0]["ok"] == 3
    assert "## Failures" in (out / "report.md").read_text()


@pytest.fixture
def stack():
    s = started(strategy="FIFO", workers=2)
    yield s
    s.close()


def test_inject_against_the_real_stack(stack, tmp_path):
    with open(GREET, "rb") as f:
        req = urllib.request.Request(stack.url + "/deploy?name=greet&lang=python", data=f.read(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        fn_id = json.load(r)["id"]
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "-m", "reference", "inject", fn_id, "3", "5", "--url", stack.url,
                           "--input", "inject", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Function ID: %s" % fn_id in proc.stdout
    assert "Successful: 15 (100.0%)" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["ok"] == 15
    assert set(figures["workers"]) <= {"0", "1"} and sum(figures["workers"].values()) == 15
