"""The scenario parser: valid files load, and every invalid one is refused naming the file and field."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from harness.load import injector, traces
from harness.run import runner, scenario

from support import ROOT, http  # noqa: E402

VALID = """
name = "t"
workers = 2
strategies = ["RR", "FIFO"]
repeat = 2

[[functions]]
name = "greet"
lang = "python"
source = "examples/greet.py"
input = "x"

[[functions]]
name = "spin"
lang = "c"
source = "examples/spin.c"

[[phases]]
name = "closed"
kind = "closed"
function = "greet"
threads = 2
requests = 5

[[phases]]
name = "open"
kind = "open"
rate = 10.0
duration = 1.0
mix = { greet = 3, spin = 1 }
inputs = { spin = "5" }

[[phases]]
name = "trace"
kind = "trace"
file = "scenarios/traces/Azure2021_200.csv"
speedup = 60
functions = ["greet", "spin"]
"""


def write(tmp_path, text, name="x.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def refuse(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(scenario.ScenarioError) as info:
        scenario.load(path)
    message = str(info.value)
    assert message.startswith(path + ": "), message
    return message[len(path) + 2:]


@pytest.mark.parametrize("path", sorted(os.path.join(ROOT, "scenarios", f)
                                        for f in os.listdir(os.path.join(ROOT, "scenarios")) if f.endswith(".toml")))
def test_shipped_scenarios_are_valid(path):
    sc = scenario.load(path)
    assert sc.phases and sc.functions and sc.strategies


def test_valid_file(tmp_path):
    sc = scenario.load(write(tmp_path, VALID))
    assert (sc.name, sc.workers, sc.repeat, sc.strategies) == ("t", 2, 2, ["RR", "FIFO"])
    assert os.path.isfile(sc.function("spin").source)
    closed, open_, trace = sc.phases
    assert (closed.threads, closed.requests) == (2, 5)
    assert open_.rate == 10.0 and open_.mix == {"greet": 3, "spin": 1}
    # Per-phase input first, then the phase's, then the function's own default.
    assert open_.input_for(sc.function("spin")) == "5"
    assert open_.input_for(sc.function("greet")) == "x"
    assert trace.speedup == 60.0 and trace.format == "azure2021"


def test_defaults(tmp_path):
    sc = scenario.load(write(tmp_path, """
        [[functions]]
        name = "greet"
        lang = "python"
        source = "examples/greet.py"
        [[phases]]
        kind = "closed"
        function = "greet"
        threads = 1
        requests = 1
        """, name="plain.toml"))
    assert (sc.name, sc.workers, sc.repeat, sc.strategies) == ("plain", 4, 1, ["RR", "FIFO"])
    assert sc.phases[0].name == "phase1"


@pytest.mark.parametrize("change, message", [
    (('rate = 10.0', 'rate = -1'), "phases[1].rate must be a positive number"),
    (('rate = 10.0', 'rate = "fast"'), "phases[1].rate must be a positive number"),
    (('threads = 2', 'threads = 0'), "phases[0].threads must be a positive integer"),
    (('requests = 5', ''), "phases[0].requests is required"),
    (('kind = "open"', 'kind = "burst"'), "phases[1].kind must be one of closed, open, trace"),
    (('mix = { greet = 3, spin = 1 }', 'mix = { greet = 3, slow = 1 }'),
     "phases[1].mix.slow names 'slow', which is not in [[functions]]"),
    (('mix = { greet = 3, spin = 1 }', 'mix = { greet = 0 }'), "phases[1].mix.greet must be a positive number"),
    (('source = "examples/spin.c"', 'source = "examples/nope.c"'),
     "functions[1].source 'examples/nope.c' is not a file"),
    (('workers = 2', 'workers = 2\nwokers = 3'), "wokers is not a known field"),
    (('speedup = 60', 'speedup = 60\nsped = 2'), "phases[2].sped is not a known field"),
    (('function = "greet"', 'function = "missing"'), "phases[0].function names 'missing'"),
    (('functions = ["greet", "spin"]', 'functions = []'), "phases[2].functions must be a non-empty list"),
    (('name = "open"', 'name = "closed"'), "phases[1].name 'closed' is used by two phases"),
    (('strategies = ["RR", "FIFO"]', 'strategies = []'), "strategies must be a non-empty list"),
    (('strategies = ["RR", "FIFO"]', 'strategies = ["RR", "FIFOO"]'),
     "strategies[1] unknown strategy 'FIFOO': choose one of RR, FIFO"),
    (('repeat = 2', 'repeat = 1.5'), "repeat must be a positive integer"),
    (('name = "spin"', 'name = "greet"'), "functions[1].name 'greet' is deployed twice"),
    (('name = "spin"', 'name = "bad name"'), "functions[1].name 'bad name' is not a valid function name"),
    (('file = "scenarios/traces/Azure2021_200.csv"', 'file = "nope.csv"'), "phases[2].file 'nope.csv' is not a file"),
    (('lang = "python"', 'lang = "python"\nmax_concurrency = 0'), "functions[0].max_concurrency must be a positive integer"),
    (('lang = "python"', 'lang = "python"\nmax_queue = -1'), "functions[0].max_queue must be an integer >= 0"),
    (('lang = "python"', 'lang = "python"\nreuse = "yes"'), "functions[0].reuse must be true or false"),
])
def test_invalid_files_name_the_field(tmp_path, change, message):
    old, new = change
    assert old in VALID
    assert message in refuse(tmp_path, VALID.replace(old, new, 1))


STACKS = VALID.replace("workers = 2\n", """workers = 2
weights = [1, 2]
scale_cooldown = 1.5
""", 1).replace("[[functions]]", """[[stacks]]
label = "fixed"

[[stacks]]
label = "auto"
workers = 1
min_workers = 1
max_workers = 4

[[functions]]""", 1)


def test_stack_options_and_variants(tmp_path):
    sc = scenario.load(write(tmp_path, STACKS))
    fixed, auto = sc.stacks
    # A variant starts from the top level's options and overrides the ones it sets.
    assert (fixed.label, fixed.workers, fixed.weights, fixed.autoscaling()) == ("fixed", 2, [1, 2], False)
    assert fixed.extra_args() == ["--scale-cooldown", "1.5", "--weights", "1,2"]
    assert auto.extra_args() == ["--min-workers", "1", "--max-workers", "4", "--scale-cooldown", "1.5",
                                 "--weights", "1,2"]
    assert [key for key, _, _ in sc.runs()] == ["RR@fixed", "RR@auto", "FIFO@fixed", "FIFO@auto"]
    assert [key for key, _, _ in sc.runs(["LEAST"])] == ["LEAST@fixed", "LEAST@auto"]
    assert auto.describe() == {"label": "auto", "workers": 1, "min_workers": 1, "max_workers": 4,
                               "scale_cooldown": 1.5, "weights": [1, 2], "executor": "local"}


def test_without_stacks_results_keep_the_strategy_names(tmp_path):
    sc = scenario.load(write(tmp_path, VALID))
    assert [key for key, _, _ in sc.runs()] == ["RR", "FIFO"]
    assert sc.stacks[0].extra_args() == [] and sc.stacks[0].executor == "local"
    nats = scenario.load(write(tmp_path, VALID.replace("workers = 2", 'workers = 2\nexecutor = "nats"\nhosts = 2')))
    assert (nats.stacks[0].executor, nats.stacks[0].hosts) == ("nats", 2)
    assert nats.stacks[0].describe()["hosts"] == 2


@pytest.mark.parametrize("change, message", [
    (("weights = [1, 2]", "weights = [1, 0]"), "weights must be a non-empty list of whole numbers >= 1"),
    (("weights = [1, 2]", 'weights = "1,2"'), "weights must be a non-empty list of whole numbers >= 1"),
    (("scale_cooldown = 1.5", "scale_cooldown = 0"), "scale_cooldown must be a positive number"),
    (("max_workers = 4", "max_workers = 0"), "stacks[1].max_workers must be a positive integer"),
    (("min_workers = 1", "min_workers = 5"), "stacks[1].min_workers must not exceed max_workers (5 > 4)"),
    (('label = "auto"', 'label = "fixed"'), "stacks[1].label 'fixed' is used by two stacks"),
    (('label = "auto"', 'label = "a b"'), "stacks[1].label must be up to 32 letters"),
    (('label = "auto"', 'lable = "auto"'), "stacks[1].lable is not a known field"),
    (('label = "fixed"', 'label = "fixed"\nexecutor = "k8s"'), "stacks[0].executor must be one of local, nats"),
    (('label = "fixed"', 'label = "fixed"\nhosts = 2'), 'stacks[0].hosts needs executor = "nats"'),
    (('label = "auto"', 'label = "auto"\nexecutor = "nats"'), "stacks[1].executor auto-scaling"),
])
def test_invalid_stack_options_name_the_field(tmp_path, change, message):
    old, new = change
    assert old in STACKS
    assert message in refuse(tmp_path, STACKS.replace(old, new, 1))


def test_missing_sections_and_bad_toml(tmp_path):
    assert "functions must be a non-empty list" in refuse(tmp_path, 'name = "x"\n')
    assert "not valid TOML" in refuse(tmp_path, 'name = \n')
    with pytest.raises(scenario.ScenarioError, match="cannot read"):
        scenario.load(str(tmp_path / "absent.toml"))


def test_bench_refuses_a_malformed_scenario_before_starting_anything(tmp_path):
    good = write(tmp_path, VALID, name="good.toml")
    bad = write(tmp_path, VALID.replace("rate = 10.0", "rate = 0"), name="bad.toml")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "reference", "bench", good, bad, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "%s: phases[1].rate must be a positive number" % bad in proc.stderr
    assert not out.exists()   # nothing ran, not even the valid file


def test_azure_trace_is_read_in_start_order_and_mapped_stably():
    invocations = traces.read(os.path.join(ROOT, "scenarios", "traces", "Azure2021_200.csv"))
    assert len(invocations) == 199
    assert invocations[0].at == 0.0
    assert all(a.at <= b.at for a, b in zip(invocations, invocations[1:]))
    assert len({i.func for i in invocations}) == 31
    names = ["a", "b", "c"]
    plan = traces.schedule(invocations, names, speedup=60.0)
    assert plan[-1][0] == pytest.approx(invocations[-1].at / 60.0)
    assert {name for _, name, _ in plan} == set(names)
    # The same trace function always lands on the same scenario function.
    first = {}
    for inv, (_, name, _) in zip(invocations, plan):
        assert first.setdefault(inv.func, name) == name
    assert traces.map_function("app/func", names) == traces.map_function("app/func", names)
    assert len(traces.schedule(invocations, names, limit=10)) == 10


def test_bad_trace_row_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("app,func,end_timestamp,duration\na,f,1.0,0.5\na,f,oops,1\n")
    with pytest.raises(ValueError, match="t.csv:3"):
        traces.read(str(path))


SWEEP = VALID + """
[[phases]]
name = "capacity"
kind = "sweep"
mix = { greet = 0.9, spin = 0.1 }
rates = [20, 40, 80, 120]
step_duration = 6.0
warmup = 1.0
slo_p99_ms = 100.0
"""


def test_sweep_phase(tmp_path):
    sc = scenario.load(write(tmp_path, SWEEP))
    sweep = sc.phases[-1]
    assert (sweep.kind, sweep.rates, sweep.step_duration, sweep.warmup, sweep.slo_p99_ms) == (
        "sweep", [20.0, 40.0, 80.0, 120.0], 6.0, 1.0, 100.0)
    assert sweep.stop_when_saturated is True and sweep.senders == scenario.SWEEP_SENDERS
    geometric = scenario.load(write(tmp_path, SWEEP.replace(
        "rates = [20, 40, 80, 120]", "rates = { start = 10, factor = 1.5, steps = 3 }")))
    assert geometric.phases[-1].rates == pytest.approx([10, 15, 22.5])


@pytest.mark.parametrize("change, message", [
    (("rates = [20, 40, 80, 120]", "rates = [20, 10]"), "phases[3].rates must rise step by step"),
    (("rates = [20, 40, 80, 120]", "rates = []"), "phases[3].rates must be a list of positive rates"),
    (("rates = [20, 40, 80, 120]", "rates = { start = 10, factor = 1.0, steps = 3 }"),
     "phases[3].rates.factor must be over 1"),
    (("rates = [20, 40, 80, 120]", "rates = { start = 10, steps = 3 }"), "phases[3].rates.factor is required"),
    (("warmup = 1.0", "warmup = 6.0"), "phases[3].warmup must be a number of seconds"),
    (("slo_p99_ms = 100.0", ""), "phases[3].slo_p99_ms is required"),
    (("slo_p99_ms = 100.0", "slo_p99_ms = 100.0\nrate = 3"), "phases[3].rate is not a known field"),
    (("step_duration = 6.0", "step_duration = 0"), "phases[3].step_duration must be a positive number"),
    (("warmup = 1.0", "warmup = 1.0\nstop_when_saturated = 1"), "phases[3].stop_when_saturated must be true or false"),
])
def test_invalid_sweeps_name_the_field(tmp_path, change, message):
    old, new = change
    assert old in SWEEP
    assert message in refuse(tmp_path, SWEEP.replace(old, new, 1))


def test_balanced_order_alternates_the_columns_repeat_by_repeat(tmp_path):
    sc = scenario.load(write(tmp_path, VALID.replace("repeat = 2", "repeat = 3")))
    order = [(i, key) for i, key, _, _ in sc.schedule()]
    # A B B A A B: each strategy runs first as often as second, each on a fresh stack.
    assert order == [(0, "RR"), (0, "FIFO"), (1, "FIFO"), (1, "RR"), (2, "RR"), (2, "FIFO")]
    stacks = scenario.load(write(tmp_path, STACKS))
    keys = [key for _, key, _, _ in stacks.schedule(["RR", "FIFO"])]
    assert keys == ["RR@fixed", "RR@auto", "FIFO@fixed", "FIFO@auto",
                    "FIFO@auto", "FIFO@fixed", "RR@auto", "RR@fixed"]
    # Over any even number of repeats, every column's mean position is the same.
    positions = {}
    for pos, key in enumerate(keys):
        positions.setdefault(key, []).append(pos % 4)
    assert len({sum(p) for p in positions.values()}) == 1


def test_deploy_settings_reach_the_gateway_so_a_scenario_can_compare_with_and_without(start_stack, tmp_path):
    sc = scenario.load(write(tmp_path, VALID.replace('lang = "python"', 'lang = "python"\nmax_concurrency = 1\n'
                                                                        'max_queue = 3\nreuse = true', 1)))
    limited = sc.functions[0]
    assert (limited.max_concurrency, limited.max_queue, limited.reuse) == (1, 3, True)
    assert (sc.functions[1].max_concurrency, sc.functions[1].reuse) == (None, False)
    stack = start_stack(workers=1)
    client = injector.Client(stack.url, timeout=60)
    try:
        record = runner.deploy(client, limited)
        assert record["ok"], record
        assert (record["max_concurrency"], record["max_queue"], record["reuse"]) == (1, 3, True)
        plain = runner.deploy(client, dataclasses.replace(limited, name="greet_plain", max_concurrency=None,
                                                          max_queue=None, reuse=False))
        assert plain["ok"] and "max_concurrency" not in plain and "reuse" not in plain, plain
        status, shown, _ = http("GET", "%s/function/%s/concurrency" % (stack.url, limited.name))
        assert status == 200 and shown["max_concurrency"] == 1 and shown["max_queue"] == 3, shown
        status, shown, _ = http("GET", "%s/function/greet_plain" % stack.url)
        assert status == 200 and shown["reuse"] is False and not shown.get("max_concurrency"), shown
    finally:
        client.close()
