"""The discrete-event model against queueing theory where it has closed forms, and the real
strategy classes' orderings on a mix where they differ."""

import os
import random
import statistics

import pytest

from harness.analysis import invocations, model
from harness.analysis.model import Job
from reference.scheduling import strategies
from reference.wire.errors import BadRequest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def exp_jobs(rate, mu, n, seed, fn="f"):
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(Job(t, fn, rng.expovariate(mu)))
    return out


def mean_wait(calls, skip=2000):
    """Mean time in queue, the first calls (the empty system's warm-up) left out."""
    return statistics.fmean(c.wait for c in calls[skip:])


# -- closed forms ------------------------------------------------------------------------------

def test_closed_forms_agree_with_each_other():
    assert model.mm1_wait(0.5, 1.0) == pytest.approx(1.0)
    assert model.mmc_wait(1, 0.7, 1.0) == pytest.approx(model.mm1_wait(0.7, 1.0))
    assert model.erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    # E_1/M/1 is M/M/1; Erlang-k gaps are more regular, so RR's queue waits less than M/M/1's.
    assert model.ekm1_wait(1, 0.6, 1.0) == pytest.approx(model.mm1_wait(0.6, 1.0), rel=1e-6)
    assert model.ekm1_wait(4, 3.0, 1.0) < model.mm1_wait(0.75, 1.0)


# Sizes where the estimate's own noise is 1 to 2 %: a 5 % miss is the model's, not chance's.
@pytest.mark.parametrize("strategy", ["FIFO", "RR"])
@pytest.mark.parametrize("rho", [0.5, 0.7])
def test_one_worker_is_mm1_whatever_the_strategy(strategy, rho):
    calls = model.simulate(exp_jobs(rho, 1.0, 150_000, seed=1), 1, strategy)
    assert all(c.ok for c in calls)
    assert mean_wait(calls) == pytest.approx(model.mm1_wait(rho, 1.0), rel=0.05)


@pytest.mark.parametrize("workers,rho", [(4, 0.75), (8, 0.7)])
def test_fifo_over_k_workers_is_mmk_erlang_c(workers, rho):
    lam = rho * workers
    calls = model.simulate(exp_jobs(lam, 1.0, 200_000, seed=2), workers, "FIFO")
    assert mean_wait(calls) == pytest.approx(model.mmc_wait(workers, lam, 1.0), rel=0.05)
    # Erlang C is also the share of calls that wait at all.
    waited = sum(c.wait > 0 for c in calls[2000:]) / len(calls[2000:])
    assert waited == pytest.approx(model.erlang_c(workers, lam), abs=0.02)


def test_rr_over_k_workers_is_k_ekm1_queues_and_worse_than_fifo():
    workers, lam = 4, 3.0
    jobs = exp_jobs(lam, 1.0, 200_000, seed=3)
    rr = mean_wait(model.simulate(jobs, workers, "RR"))
    fifo = mean_wait(model.simulate(jobs, workers, "FIFO"))
    assert rr == pytest.approx(model.ekm1_wait(workers, lam, 1.0), rel=0.05)
    assert fifo == pytest.approx(model.mmc_wait(workers, lam, 1.0), rel=0.05)
    assert fifo < rr / 3     # one shared queue: at rho 0.75 a third of RR's wait, or less


def test_rr_sends_every_kth_call_to_the_same_worker():
    calls = model.simulate([Job(float(i), "f", 0.5) for i in range(12)], 3, "RR")
    assert [c.worker for c in calls] == [0, 1, 2] * 4
    assert all(c.wait == 0 for c in calls)


# -- orderings on a bimodal mix ------------------------------------------------------------------

def bimodal(n=60_000, seed=4):
    """90% 5 ms, 10% 200 ms calls; 4 workers at 60% load."""
    mean = 0.9 * 0.005 + 0.1 * 0.2
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(0.6 * 4 / mean)
        long = rng.random() < 0.1
        out.append(Job(t, "long" if long else "short", 0.2 if long else 0.005))
    return out


def short_latencies(calls):
    return sorted(c.latency for c in calls if c.job.fn == "short")


def test_fifo_beats_rr_on_short_calls_behind_long_ones():
    jobs = bimodal()
    rr, fifo = (short_latencies(model.simulate(jobs, 4, s)) for s in ("RR", "FIFO"))
    p99 = lambda xs: xs[int(0.99 * len(xs))]
    assert statistics.fmean(fifo) < statistics.fmean(rr) / 2
    assert p99(fifo) < p99(rr) / 1.5
    # LEAST sees the queues, as FIFO does: between the two, closer to FIFO.
    least = short_latencies(model.simulate(jobs, 4, "LEAST"))
    assert statistics.fmean(fifo) <= statistics.fmean(least) < statistics.fmean(rr)


def test_every_registered_strategy_runs_every_call_once_and_in_order_per_worker():
    jobs = bimodal(5000)
    for name in strategies.STRATEGIES:
        calls = model.simulate(jobs, 3, name, weights=[1, 2, 3] if name == "WEIGHTED" else None)
        assert all(c.ok and c.end - c.start >= c.job.service - 1e-12 for c in calls), name
        by_worker = {}
        for c in sorted(calls, key=lambda c: c.start):
            last = by_worker.get(c.worker)
            assert last is None or c.start >= last.end - 1e-12, name   # one call at a time
            by_worker[c.worker] = c


def test_weighted_shares_follow_the_weights():
    calls = model.simulate([Job(i * 0.01, "f", 0.001) for i in range(600)], 3, "WEIGHTED", weights=[1, 2, 3])
    counts = [sum(c.worker == w for c in calls) for w in range(3)]
    assert counts == [100, 200, 300]


def test_a_strategy_instance_is_driven_as_given_and_unknown_names_refused():
    class LastWorker(strategies.Strategy):
        name = "LAST"

        def _choose(self, job_id, fn_id):
            return self._order[-1]
    calls = model.simulate([Job(float(i), "f", 0.1) for i in range(5)], 3, LastWorker())
    assert {c.worker for c in calls} == {2}
    with pytest.raises(BadRequest):
        model.simulate([], 2, "NOPE")


# -- closed loops, cold starts, refusals ----------------------------------------------------------

def test_closed_loop_throughput_is_workers_over_service():
    m = model.Model(4, "FIFO")
    calls = model.closed_loop(m, threads=10, requests=100, fn="f", service=lambda: 0.01)
    assert len(calls) == 1000
    assert max(c.end for c in calls) == pytest.approx(1000 * 0.01 / 4)
    # Fewer threads than workers: each thread runs alone, no wait.
    calls = model.closed_loop(model.Model(4, "RR"), threads=2, requests=50, fn="f", service=lambda: 0.01)
    assert max(c.end for c in calls) == pytest.approx(0.5) and max(c.wait for c in calls) == 0


def test_a_call_is_cold_on_a_worker_that_has_not_run_its_function_lately():
    jobs = [Job(float(i), fn, 0.1) for i, fn in enumerate("aabab")]
    calls = model.simulate(jobs, 1, "RR", init_s={"a": 0.5})
    assert [c.cold for c in calls] == [True, False, True, False, False]
    assert [round(c.end - c.start, 9) for c in calls] == [0.6, 0.1, 0.1, 0.1, 0.1]
    # One warm slot: every change of function evicts the other.
    calls = model.simulate(jobs, 1, "RR", init_s={"a": 0.5}, warm_slots=1)
    assert [c.cold for c in calls] == [True, False, True, True, True]


def test_warm_strategy_cuts_cold_starts():
    rng = random.Random(5)
    jobs = [Job(i * 0.05, rng.choice("abcdefgh"), 0.02) for i in range(4000)]
    rate = lambda s: statistics.fmean(c.cold for c in model.simulate(jobs, 8, s, warm_slots=1))
    assert rate("WARM") < rate("RR") / 2


def test_max_queue_refuses_calls_as_the_server_does():
    jobs = [Job(0.0, "f", 1.0) for _ in range(10)]
    calls = model.simulate(jobs, 2, "FIFO", max_queue=3)
    assert [c.ok for c in calls] == [True] * 5 + [False] * 5
    assert {c.kind for c in calls if not c.ok} == {"overloaded"}


# -- slowdown and cold-start figures -----------------------------------------------------------

def test_slowdown_is_latency_over_exec_with_a_floor():
    assert invocations.slowdown(30.0, 10.0) == 3.0
    assert invocations.slowdown(5.0, 0.0) == 5.0        # 0 ms in the trace: over 1 ms
    calls = [{"fn": "a", "t": 0.5, "latency_ms": 20.0, "exec_ms": 10.0, "cold": True, "trace_fn": "x"},
             {"fn": "a", "t": 1.5, "latency_ms": 10.0, "exec_ms": 10.0, "cold": False, "trace_fn": "x"},
             {"fn": "b", "t": 1.7, "latency_ms": 40.0, "exec_ms": 10.0, "cold": False, "trace_fn": "y"},
             {"fn": "b", "t": 1.8, "latency_ms": 40.0, "exec_ms": None, "ok": True}]
    fig = invocations.figures(calls, duration_s=2.0)
    assert fig["slowdown"]["n"] == 3 and fig["slowdown"]["mean"] == pytest.approx(7 / 3)
    assert fig["per_function"]["a"]["slowdown"]["p50"] == 1.5
    assert fig["per_trace_function"]["x"]["invocations"] == 2
    assert fig["cold"]["rate"] == pytest.approx(1 / 3)
    assert [(b["calls"], b["cold"]) for b in fig["cold"]["timeline"]] == [(1, 1), (2, 0)]
    assert len(invocations.select(calls, "warm")) == 2 and len(invocations.select(calls, "cold")) == 1


# -- minifaas simulate: a scenario through the model -------------------------------------------------

def tiny_scenario(tmp_path, phases, service_ms=(5.0, 200.0)):
    from harness.run import scenario
    src = tmp_path / "spin.c"
    src.write_text("int main(void) { return 0; }\n")
    functions = [{"name": "short", "lang": "c", "source": str(src)},
                 {"name": "long", "lang": "c", "source": str(src)}]
    for f, ms in zip(functions, service_ms):
        if ms is not None:
            f["service_ms"] = ms
    raw = {"name": "tiny", "workers": 2, "strategies": ["RR", "FIFO"], "repeat": 2,
           "functions": functions, "phases": phases}
    return scenario.parse(raw, str(tmp_path / "tiny.toml"))


OPEN = {"name": "mix", "kind": "open", "rate": 40.0, "duration": 20.0, "mix": {"short": 0.9, "long": 0.1}}


def test_simulated_result_has_the_measured_format_marked_simulated(tmp_path):
    from harness import simulate
    sc = tiny_scenario(tmp_path, [OPEN, {"name": "seed", "kind": "closed", "function": "short",
                                         "threads": 4, "requests": 10}])
    result = simulate.simulate_scenario(sc)
    assert result["simulated"] is True and result["ok"] is True
    assert result["model"]["service"] == {"short": "service_ms 5", "long": "service_ms 200"}
    for key in ("RR", "FIFO"):
        mix = result["strategies"][key]["phases"]["mix"]
        assert len(mix["runs"]) == 2 and mix["aggregate"]["runs"] == 2
        run = mix["runs"][0]
        for field in ("requests", "ok", "throughput_rps", "latency_ms", "latency_quantiles_ms", "timeline",
                      "workers", "per_function", "slowdown", "cold"):
            assert field in run, field
        assert run["simulated"] is True and run["requests"] == run["ok"]
        assert run["per_function"]["short"]["slowdown"]["p50"] >= 1.0
        assert result["strategies"][key]["phases"]["seed"]["runs"][0]["requests"] == 40
    # The same arrivals as bench: the open loop's seeded schedule, for every strategy.
    rr, fifo = (result["strategies"][k]["phases"]["mix"]["runs"][0]["requests"] for k in ("RR", "FIFO"))
    from harness.run import runner
    assert rr == fifo == len(runner.open_items(sc.phases[0], sc, {"short": "s", "long": "l"}, 0))
    short_p99 = {k: result["strategies"][k]["phases"]["mix"]["aggregate"]["latency_ms"]["p99"]["mean"]
                 for k in ("RR", "FIFO")}
    assert short_p99["FIFO"] < short_p99["RR"]


def test_a_function_without_a_service_time_is_skipped_with_the_way_to_give_one(tmp_path):
    from harness import simulate
    sc = tiny_scenario(tmp_path, [OPEN], service_ms=(5.0, None))
    entry = simulate.simulate_scenario(sc)["strategies"]["RR"]["phases"]["mix"]
    assert entry["runs"] == [] and "service_ms" in entry["skipped"] and "long" in entry["skipped"]
    # A bench run that measured it gives it one.
    measured = {"strategies": {"RR": {"cold": {}, "phases": {"mix": {"runs": [
        {"per_function": {"long": {"exec_quantiles_ms": [100.0, 150.0, 300.0]}}}]}}}}}
    service = simulate.ServiceTimes.from_result(sc.functions, measured)
    result = simulate.simulate_scenario(sc, service=service)
    assert result["strategies"]["RR"]["phases"]["mix"]["runs"]
    assert result["model"]["service"]["long"] == "measured exec_ms"
    rng = random.Random(0)
    assert all(0.1 <= service.draw("long", rng) <= 0.3 for _ in range(100))


def test_a_trace_phase_is_simulated_with_the_durations_it_sends(tmp_path):
    from harness import simulate
    trace = tmp_path / "t.csv"
    trace.write_text("app,func,end_timestamp,duration\n" + "".join(
        "a,f%d,%f,%f\n" % (i % 3, 1.0 + i * 0.5, 0.01 * (1 + i % 3)) for i in range(60)))
    sc = tiny_scenario(tmp_path, [{"name": "tr", "kind": "trace", "file": str(trace), "functions": ["short", "long"],
                                   "input_from_duration": True, "speedup": 1.0}], service_ms=(None, None))
    run = simulate.simulate_scenario(sc, workers=50)["strategies"]["FIFO"]["phases"]["tr"]["runs"][0]
    assert run["requests"] == 60
    # 50 idle workers: nothing waits, every call takes its own 10, 20 or 30 ms.
    assert run["slowdown"]["p99"] == pytest.approx(1.0)
    assert set(run["per_trace_function"]) == {"f0", "f1", "f2"}
    assert run["latency_ms"]["max"] == pytest.approx(30.0)


def test_predict_puts_the_model_beside_each_measured_run_of_a_model_phase(tmp_path):
    from harness import simulate
    sc = tiny_scenario(tmp_path, [dict(OPEN, model=True), dict(OPEN, name="plain")], service_ms=(None, None))
    measured_run = {"per_function": {"short": {"exec_quantiles_ms": [5.0] * 11},
                                     "long": {"exec_quantiles_ms": [200.0] * 11}}}
    outcome = {"cold": {}, "phases": {"mix": {"runs": [dict(measured_run)], "aggregate": {}},
                                      "plain": {"runs": [dict(measured_run)], "aggregate": {}}}}
    simulate.predict(sc, sc.stacks[0], "FIFO", outcome)
    predicted = outcome["phases"]["mix"]["runs"][0]["predicted"]
    assert predicted["latency_ms"]["p50"] == pytest.approx(5.0, rel=0.2)
    assert outcome["phases"]["mix"]["aggregate"]["predicted"]["latency_ms"]["p99"]["n"] == 1
    assert "predicted" not in outcome["phases"]["plain"]["runs"][0]


def test_simulate_cli_writes_the_result_and_its_report(tmp_path):
    import argparse
    from harness import simulate
    from harness.analysis import results
    scenario_file = tmp_path / "cli.toml"
    scenario_file.write_text('''name = "cli"
workers = 2
[[functions]]
name = "short"
lang = "c"
source = "%s"
service_ms = 5.0
[[phases]]
name = "mix"
kind = "open"
rate = 50.0
duration = 4.0
mix = { short = 1.0 }
''' % os.path.join(ROOT, "examples", "spin.c"))
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args([str(scenario_file), "--workers", "3", "--out", str(tmp_path / "out")])
    assert simulate.cli(args) == 0
    result = results.load(str(tmp_path / "out" / "cli" / "result.json"))
    assert result["simulated"] is True and result["scenario"]["workers"] == 3
    assert (tmp_path / "out" / "cli" / "report.md").exists()


def test_records_give_each_measured_call_its_trace_function_and_split():
    from harness.load.injector import Sample
    started = 1000.123
    items = [(0.5, "a", "id", b""), (0.5, "a", "id", b""), (0.75, "b", "id", b"")]
    tags = ["x", "y", "z"]
    samples = [Sample("b", started + 0.75, started + 0.75, started + 0.8, 200, True, cold=True,
                      queue_ms=1.0, init_ms=20.0, exec_ms=10.0),
               Sample("a", started + 0.5, started + 0.5, started + 0.6, 200, True, cold=False, exec_ms=50.0),
               Sample("a", started + 0.5, started + 0.5, started + 0.7, 200, True, cold=False, exec_ms=50.0)]
    got = invocations.records(samples, started, items, tags)
    assert [r["trace_fn"] for r in got] == ["z", "x", "y"]
    assert got[0]["init_ms"] == 20.0 and got[0]["exec_ms"] == 10.0 and got[0]["t"] == pytest.approx(0.8)
    fig = invocations.figures(got)
    assert set(fig["per_trace_function"]) == {"x", "y", "z"}
    assert fig["per_function"]["a"]["exec_quantiles_ms"][0] == 50.0
    assert "exec_quantiles_ms" not in fig["per_function"]["b"]       # its one call was cold
    assert [s.fn for s in invocations.select(samples, "cold")] == ["b"]


def test_a_sweep_is_simulated_step_by_step_and_finds_the_capacity_theory_gives(tmp_path):
    from harness import simulate
    # 2 workers of 20 ms each serve at most 100 calls/s: the SLO is met below, missed above.
    sweep = {"name": "cap", "kind": "sweep", "mix": {"short": 1.0}, "rates": [20, 40, 60, 80, 95, 120, 160],
             "step_duration": 20.0, "warmup": 2.0, "slo_p99_ms": 100.0}
    sc = tiny_scenario(tmp_path, [sweep], service_ms=(20.0, None))
    result = simulate.simulate_scenario(sc, strategies=["FIFO"])
    run = result["strategies"]["FIFO"]["phases"]["cap"]["runs"][0]
    assert [s["offered_rps"] for s in run["steps"]][:3] == [20.0, 40.0, 60.0]
    assert run["steps"][-1]["saturated"] and not run["steps"][0]["saturated"]
    assert 50.0 < run["capacity_rps"] < 100.0 and run["capacity_bound"] == "interpolated"
    # predict: the capacity beside a measured sweep run.
    outcome = {"cold": {}, "phases": {"cap": {"runs": [{"repeat": 0, "per_function": {
        "short": {"exec_quantiles_ms": [20.0] * 5}}}], "aggregate": {}}}}
    sc.phases[0].model = True
    simulate.predict(sc, sc.stacks[0], "FIFO", outcome)
    predicted = outcome["phases"]["cap"]["runs"][0]["predicted"]
    assert predicted["capacity_rps"] == pytest.approx(run["capacity_rps"])
    assert [s["offered_rps"] for s in predicted["steps"]] == [s["offered_rps"] for s in run["steps"]]
    assert outcome["phases"]["cap"]["aggregate"]["predicted"]["capacity_rps"]["mean"] == predicted["capacity_rps"]


def test_a_predicted_sweep_starts_warm_as_bench_warms_every_worker_first(tmp_path):
    from harness import simulate
    # 2 workers of 20 ms: 20 calls/s meet a 100 ms SLO easily, unless every step paid a cold
    # start of 500 ms on each worker (bench warms the workers up before the first step).
    sweep = {"name": "cap", "kind": "sweep", "mix": {"short": 1.0}, "rates": [20, 40],
             "step_duration": 10.0, "warmup": 0.0, "slo_p99_ms": 100.0, "model": True}
    sc = tiny_scenario(tmp_path, [sweep], service_ms=(20.0, None))
    outcome = {"cold": {"short": {"cold": True, "init_ms": 500.0}},
               "phases": {"cap": {"runs": [{"repeat": 0, "per_function": {
                   "short": {"exec_quantiles_ms": [20.0] * 5}}}], "aggregate": {}}}}
    simulate.predict(sc, sc.stacks[0], "FIFO", outcome)
    predicted = outcome["phases"]["cap"]["runs"][0]["predicted"]
    assert [s["p99"] < 100.0 for s in predicted["steps"]] == [True, True]
    assert predicted["capacity_bound"] == "at_least" and predicted["capacity_rps"] == 40.0


def test_report_leads_with_slowdown_and_names_predictions_more_than_20_percent_off(tmp_path):
    from harness import simulate
    from harness.render import calls, report
    sc = tiny_scenario(tmp_path, [dict(OPEN, model=True)])
    result = simulate.simulate_scenario(sc)
    text = report.render(result)
    assert "**Simulated**" in text
    assert text.index("Slowdown: latency") < text.index("| strategy | kind | runs")
    assert "Cold starts" in text
    # A measured run beside its prediction: p99 50 % over the model is named, p50 is not.
    run = result["strategies"]["RR"]["phases"]["mix"]["runs"][0]
    run["predicted"] = {"latency_ms": {"p50": run["latency_ms"]["p50"], "p99": run["latency_ms"]["p99"] / 1.5},
                        "throughput_rps": run["throughput_rps"], "slowdown": dict(run["slowdown"])}
    rows = {(s, label): gap for s, label, _, _, gap in calls.gaps(result, ["RR", "FIFO"], "mix")}
    assert rows[("RR", "p50 latency (ms)")] == pytest.approx(0.0)
    assert rows[("RR", "p99 latency (ms)")] == pytest.approx(-1 / 3)
    assert ("FIFO", "p99 latency (ms)") not in rows
    text = report.render(result)
    assert "Differ from the model by more than 20 %: RR p99 latency (ms)" in text
    assert calls.draw(result, str(tmp_path)) == [str(tmp_path / "cold_starts.png")]


def test_trace_calls_are_stretched_to_the_measured_mean_exec_of_their_function(tmp_path):
    from harness import simulate
    trace = tmp_path / "t.csv"
    trace.write_text("app,func,end_timestamp,duration\n" + "".join(
        "a,f%d,%f,%f\n" % (i % 2, 1.0 + i, 0.01 * (1 + i % 2)) for i in range(40)))
    sc = tiny_scenario(tmp_path, [{"name": "tr", "kind": "trace", "file": str(trace), "functions": ["short"],
                                   "input_from_duration": True}], service_ms=(None, None))
    plain = simulate.phase_jobs(sc.phases[0], sc, 0, simulate.ServiceTimes(sc.functions))
    assert sorted({round(j.service, 6) for j in plain}) == [0.01, 0.02]
    measured = simulate.ServiceTimes(sc.functions, {"short": [30.0, 30.0]})   # asked 15 ms on average
    stretched = simulate.phase_jobs(sc.phases[0], sc, 0, measured)
    assert sorted({round(j.service, 6) for j in stretched}) == [0.02, 0.04]
    assert [j.tag for j in stretched] == [j.tag for j in plain]


def test_sweep_plots_draw_the_model_beside_the_measured_steps(tmp_path):
    from harness import simulate
    from harness.render import plots
    sweep = {"name": "cap", "kind": "sweep", "mix": {"short": 1.0}, "rates": [20, 60, 120],
             "step_duration": 5.0, "slo_p99_ms": 100.0, "model": True}
    sc = tiny_scenario(tmp_path, [sweep], service_ms=(20.0, None))
    result = simulate.simulate_scenario(sc, strategies=["FIFO"])
    entry = result["strategies"]["FIFO"]["phases"]["cap"]
    for run in entry["runs"]:    # the simulated runs stand for measured ones here
        run["per_function"]["short"]["exec_quantiles_ms"] = [20.0] * 3
    simulate.predict(sc, sc.stacks[0], "FIFO", result["strategies"]["FIFO"])
    got = plots._predicted_steps(result, "FIFO", "cap")
    assert [rate for rate, *_ in got] == [s["offered_rps"] for s in entry["runs"][0]["steps"]]
    assert all(os.path.exists(p) for p in (plots.sweep_latency(result, str(tmp_path)),
                                           plots.sweep_throughput(result, str(tmp_path))))
