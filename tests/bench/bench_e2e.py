"""End to end through a real `minifaas up` (4 workers, RR): one invocation's latency, issue 6's
ratios measured side by side, and the seed's own load test (10 threads x 100 requests on hello).

The ratios are printed in the run's summary and kept in each benchmark's extra_info; nothing
about speed is asserted, only that every request succeeded.
"""

import io
import json
import os
import subprocess
import sys
import tarfile

import keepalive
import pytest
from harness.analysis import stats
from benchpaths import EXAMPLES, HERE
from figures import record
from support import started

CLIENTS = 16
SECONDS = 4.0
BASELINE_SECONDS = 3.0
INPUT = json.dumps({"input": "test data"}).encode()
# CPU per request falls as the rate rises (more requests a wake-up), so two paths or two trees
# loaded by the same clients at their own full rates differ by their rates as well as by their
# code: the faster one looks cheaper than it is. Comparisons of CPU per request are also made
# with both sides at one rate, this share of the slower side's full rate (room enough that it
# keeps up).
EQUAL_RATE_SHARE = 0.8


@pytest.fixture(scope="module")
def stack(hello_wasm):
    stack = started(strategy="RR", workers=4)
    keepalive.deploy(stack.url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())
    keepalive.deploy(stack.url, "greet", "python", (EXAMPLES / "greet.py").read_bytes())
    yield stack
    stack.close()


def load(stack, fn, seconds=SECONDS, rate=None):
    figures = keepalive.run(stack.url, "/invoke?fn=" + fn, INPUT, CLIENTS, seconds, rate=rate)
    assert figures["errors"] == 0, figures["first_error"]
    assert figures["requests"] > 0
    return figures


def wasm_baseline(hello_wasm, pre=False):
    """Calls/s of one thread with wasmtime's ordinary API (pre: the call as a worker makes it,
    its engine, its WASI and a cached InstancePre, without the platform: issue 20's ceiling), in
    a process of its own (wasm_baseline.py)."""
    proc = subprocess.run([sys.executable, str(HERE / "wasm_baseline.py"), str(hello_wasm), str(BASELINE_SECONDS)]
                          + (["pre"] if pre else []), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["calls_per_s"]


def test_e2e_invocation(benchmark, stack):
    """One client, one keep-alive connection: the latency of the whole path, hello in C."""
    parts = stack.url.rsplit(":", 1)
    conn = keepalive.Connection("127.0.0.1", int(parts[1]),
                                keepalive.request_bytes("127.0.0.1", int(parts[1]), "/invoke?fn=hello", INPUT))
    try:
        status, answer = benchmark(conn.call)
    finally:
        conn.close()
    assert status == 200, answer
    assert b"Hello from FAAS!\\ntest data" in answer


def test_end_to_end_ratios(benchmark, stack, hello_wasm):
    """(a) hello in C through the whole stack vs one in-process wasmtime thread (issue 6's
    ordinary API), (c) vs the same thread making the worker's own call (a cached InstancePre,
    the worker's engine and WASI: issue 20's ceiling); (b) the Python function's rate vs the C function's, both through the stack."""
    figures = {}

    def measure():
        # The baselines run while the stack is idle, once before and once after the C load: on
        # a shared machine the CPU they get drifts, and (a), (c) compare them with what ran between.
        # (b) likewise: the Python load runs once before the C load and once after it, and its
        # rate is their mean, so that a drift of the host over the run falls on both sides.
        figures["pythons"] = [load(stack, "greet")]
        before = wasm_baseline(hello_wasm), wasm_baseline(hello_wasm, pre=True)
        figures["c"] = load(stack, "hello")
        after = wasm_baseline(hello_wasm, pre=True), wasm_baseline(hello_wasm)
        figures["baseline"], figures["baselines"] = (before[0] + after[1]) / 2, [before[0], after[1]]
        figures["pre"], figures["pres"] = (before[1] + after[0]) / 2, [before[1], after[0]]
        figures["pythons"].append(load(stack, "greet"))
        figures["python"] = dict(figures["pythons"][1],
                                 rps=sum(f["rps"] for f in figures["pythons"]) / len(figures["pythons"]))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    c, py, base, pre = figures["c"], figures["python"], figures["baseline"], figures["pre"]
    ratio_wasm = c["rps"] / base
    ratio_pre = c["rps"] / pre
    ratio_python = py["rps"] / c["rps"]
    benchmark.extra_info.update(baseline_calls_per_s=base, instance_pre_calls_per_s=pre, c=c, python=py,
                                ratio_c_stack_over_inprocess=ratio_wasm, ratio_c_stack_over_instance_pre=ratio_pre,
                                ratio_python_over_c=ratio_python)
    section = "end to end, 4 workers, %d keep-alive clients, %.0f s each" % (CLIENTS, SECONDS)
    record(section, "wasmtime in-process, 1 thread, ordinary API", calls_per_s=round(base, 1),
           before_and_after=[round(b, 1) for b in figures["baselines"]])
    record(section, "wasmtime in-process, 1 thread, the worker's call (cached InstancePre, its engine and WASI)", calls_per_s=round(pre, 1),
           before_and_after=[round(b, 1) for b in figures["pres"]])
    for name, f in (("hello (C) through the stack", c), ("greet (Python) through the stack, before C", figures["pythons"][0]),
                    ("greet (Python) through the stack, after C", figures["pythons"][1])):
        record(section, name, rps=round(f["rps"], 1), p50_ms=f["p50_ms"], p99_ms=f["p99_ms"],
               client_cpu=round(f["client_cpu_share"], 3))
    record(section, "(a) C stack / in-process ordinary API (>= 1, issue 6)", ratio=round(ratio_wasm, 3),
           met=ratio_wasm >= 1)
    record(section, "(c) C stack / in-process worker call (>= 0.7, issue 20)", ratio=round(ratio_pre, 3),
           met=ratio_pre >= 0.7)
    record(section, "(b) Python (mean of before and after) / C (>= 0.35, issue 20)", ratio=round(ratio_python, 3),
           met=ratio_python >= 0.35)


def test_seed_load_test(benchmark, stack, tmp_path):
    """The seed's load test as its user runs it: `minifaas inject hello 10 100`."""
    out = tmp_path / "inject.json"
    command = [sys.executable, "-m", "reference", "inject", "hello", "10", "100", "--url", stack.url,
               "--json", str(out)]
    proc = benchmark.pedantic(subprocess.run, args=(command,), kwargs=dict(capture_output=True, text=True, timeout=300),
                              rounds=1, iterations=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(out.read_text())
    assert figures["ok"] == 1000
    lat = figures["latency_ms"]
    benchmark.extra_info.update(requests_per_s=figures["requests_per_s"], latency_ms=lat)
    record("seed load test: minifaas inject hello 10 100 (4 workers, RR)", "hello (C)",
           rps=round(figures["requests_per_s"], 1), p50_ms=round(lat["p50"], 2), p99_ms=round(lat["p99"], 2))


def cpu_by_component(stack):
    """CPU seconds used so far by each process of the stack's group, summed per component."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {}
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) != stack.proc.pid:     # not in the stack's process group
            continue
        # Workers are forked from the server and keep its command line: the server is their parent.
        name = next((a.decode() for a in argv if a in (b"balancer", b"server", b"gateway", b"up")), "other")
        if name == "server" and int(fields[1]) != stack.proc.pid:
            name = "workers"
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def test_cpu_per_request(benchmark, stack):
    """Where the machine's time goes: CPU microseconds per hello request in each component,
    under the same 16-client load (the sum bounds the rate two cores can reach); and the
    gateway's CPU with POST /invoke answered by bottle (FAAS_GATEWAY_FAST=0, a second stack)
    against the fast path (reference/gateway/fast.py), loaded in turn in the same run, at
    their full rates and then both at one rate (EQUAL_RATE_SHARE of bottle's): the slower path
    would otherwise cost more a request for its rate too."""
    bottle_stack = started(strategy="RR", workers=4, env={"FAAS_GATEWAY_FAST": "0"})
    figures = {}
    try:
        keepalive.deploy(bottle_stack.url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())

        def measure():
            figures["fast"] = cpu_per_request(stack)
            figures["bottle"] = cpu_per_request(bottle_stack)
            figures["fast_again"] = cpu_per_request(stack)
            rate = EQUAL_RATE_SHARE * figures["bottle"][1]["rps"]
            figures["bottle_equal"] = cpu_per_request(bottle_stack, rate=rate)
            figures["fast_equal"] = cpu_per_request(stack, rate=rate)

        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        bottle_stack.close()
    per_request, rps = figures["fast"][0], figures["fast"][1]["rps"]
    benchmark.extra_info.update(cpu_us_per_request=per_request, rps=rps,
                                bottle_cpu_us_per_request=figures["bottle"][0])
    section = "CPU per hello request by component (microseconds, 16 clients)"
    record(section, "hello (C)", **per_request)
    record(section, "hello (C), POST /invoke through bottle", **figures["bottle"][0])
    fast = (per_request["gateway"] + figures["fast_again"][0]["gateway"]) / 2
    ratio = fast / figures["bottle"][0]["gateway"]
    section = "the gateway's CPU per hello request (issue 20)"
    record(section, "fast path (mean of the loads before and after bottle's)", us=round(fast))
    record(section, "fast path / bottle, same run, each at its full rate", ratio=round(ratio, 3))
    equal = figures["fast_equal"][0]["gateway"] / figures["bottle_equal"][0]["gateway"]
    record(section, "fast path / bottle, same run, both at %.0f req/s" % figures["fast_equal"][1]["rate"],
           ratio=round(equal, 3), us=[figures["fast_equal"][0]["gateway"], figures["bottle_equal"][0]["gateway"]])


# Issue 20 asks for the gateway's CPU per request at most half of what it was when the issue
# was filed, at this commit. 294 us there was another host's figure: on this one, only the
# same load on that commit's stack, alternated with this tree's, says where the target is.
ISSUE_20_FILED_AT = "149816a"
BASELINE_PAIRS = 5
WARM_SECONDS = 1.0


def baseline_tree(tmp_path):
    """That commit's `reference` package (git archive), or None without the git history."""
    root = HERE.parent.parent
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", ISSUE_20_FILED_AT, "reference"],
                                 capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    tree = tmp_path / ("at-" + ISSUE_20_FILED_AT)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree)
    return tree


def fresh_gateway_cpu(rate, **options):
    """The gateway's CPU us per hello request of a stack started for this measure alone and
    warmed first (its cold starts and first routes are not counted), under the 16 clients at
    their full rate and then at `rate` (None: EQUAL_RATE_SHARE of the full rate), as {"full",
    "equal": us, "rate": the equal rate, "rps": [full, equal], "late": late sends at the equal
    rate}. Both sides of a pair are measured alike, neither one a long-lived stack that earlier
    loads have filled."""
    fresh = started(strategy="RR", workers=4, **options)
    try:
        keepalive.deploy(fresh.url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())
        load(fresh, "hello", WARM_SECONDS)
        full, full_load = cpu_per_request(fresh)
        rate = rate or EQUAL_RATE_SHARE * full_load["rps"]
        equal, equal_load = cpu_per_request(fresh, rate=rate)
        return {"full": full["gateway"], "equal": equal["gateway"], "rate": rate,
                "rps": [round(full_load["rps"]), round(equal_load["rps"])], "late": equal_load["late"]}
    finally:
        fresh.close()


def test_gateway_cpu_against_the_commit_issue_20_was_filed_at(benchmark, tmp_path):
    """The gateway's CPU per hello request, this tree's against 149816a's (the same load, the
    same machine, the same dependencies; each baseline stack from that commit's package, run
    from its own directory so that `python -m reference` takes it). Each side of each pair is a
    stack of its own, warmed before it is measured, and the order alternates from pair to pair
    (the host's drift falls on both sides alike). Each side is measured twice: at the 16
    clients' full rate (issue 20's own method, which favours the faster tree: this tree's stack
    serves hello about 1.4 x faster) and at one equal rate for all pairs, EQUAL_RATE_SHARE of
    the first baseline stack's full rate (near the load 294 us was measured at). The verdict,
    target <= 0.5, is the equal rate's: the median of the pairs' ratios with its 94 % interval,
    "met" only when all of the interval is (stats.median_against)."""
    tree = baseline_tree(tmp_path)
    section = "the gateway's CPU per hello request (issue 20)"
    if tree is None:
        record(section, "this tree / %s (<= 0.5)" % ISSUE_20_FILED_AT, ratio=None, met=None,
               why="no git history here to take that commit from")
        pytest.skip("needs the git history (commit %s) for the baseline" % ISSUE_20_FILED_AT)
    pairs, rates, rate = [], [], None

    def measure():
        nonlocal rate
        for n in range(BASELINE_PAIRS):
            sides = [("old", {"cwd": str(tree), "env": {"PYTHONPATH": str(tree)}}), ("new", {})]
            measured = {}
            for side, options in (sides if n % 2 == 0 else sides[::-1]):      # the first is old
                measured[side] = fresh_gateway_cpu(rate, **options)
                rate = measured[side]["rate"]
                rates.append([side, *measured[side]["rps"], measured[side]["late"]])
            pairs.append((measured["old"], measured["new"]))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    verdicts = {}
    for kind in ("full", "equal"):
        ratios = [new[kind] / old[kind] for old, new in pairs]
        verdicts[kind] = stats.median_against(ratios, 0.5)
        verdicts[kind]["ratios"] = ratios
    benchmark.extra_info.update(pairs_us=pairs, rates=rates, equal_rate=rate,
                                verdicts={k: {x: v[x] for x in ("median", "interval", "verdict", "ratios")}
                                          for k, v in verdicts.items()})
    record(section, "%s's gateway and this tree's, %d pairs, fresh warmed stacks, order alternated: us at the "
           "full rate, at %.0f req/s" % (ISSUE_20_FILED_AT, BASELINE_PAIRS, rate),
           full=[[old["full"], new["full"]] for old, new in pairs],
           equal=[[old["equal"], new["equal"]] for old, new in pairs])
    record(section, "each side in turn: [side, req/s at the full rate, req/s at the equal rate, sends a whole "
           "interval late at the equal rate]", sides=rates)
    for kind, label in (("full", "at each tree's full rate (favours the faster tree; not the verdict)"),
                        ("equal", "at one equal rate, %.0f req/s (<= 0.5)" % rate)):
        against = verdicts[kind]
        record(section, "this tree / %s, median of the pairs, %s" % (ISSUE_20_FILED_AT, label),
               ratio=round(against["median"], 3),
               median_ci=[None if x is None else round(x, 3) for x in against["interval"]],
               ci_coverage=round(against["coverage"], 3), met=against["verdict"] == "met",
               verdict=against["verdict"])


def cpu_per_request(stack, rate=None):
    """({component: CPU us per request}, the load's figures) of a 16-client hello load on
    `stack`; with `rate`, of the same clients sending `rate` requests a second."""
    before = cpu_by_component(stack)
    figures = load(stack, "hello", rate=rate)
    after = cpu_by_component(stack)
    # The counters run through warm-up and the tail too, so divide by what completed in all.
    done = figures["requests"] * (1 + 0.5 / SECONDS)
    per_request = {k: round((after[k] - before.get(k, 0.0)) / done * 1e6) for k in sorted(after) if k != "up"}
    per_request["total"] = sum(per_request.values())
    return per_request, figures
