"""One call through reference.worker.runtimes.WorkerRuntimes, as a worker makes it: hello.c in wasmtime
(precompiled artifact, cached InstancePre, fresh instance per call) and greet.py under python3.

These run wasmtime and reap children in the pytest process, so conftest orders them last."""

import json
import pathlib
import shutil
import statistics
import subprocess
import time

import pytest
from benchpaths import EXAMPLES, HERE
from figures import record

from reference.wire.jobs import Job
from reference.worker.runtimes import WorkerRuntimes

pytestmark = pytest.mark.in_process_runtime


@pytest.fixture(scope="module")
def runtimes():
    rt = WorkerRuntimes()
    yield rt
    rt.close()


def test_wasm_call(benchmark, runtimes, hello_wasm, tmp_path):
    from reference.worker.wasm import engine as wasm
    fn_dir = tmp_path / "hello_1"
    fn_dir.mkdir()
    shutil.copy(hello_wasm, fn_dir / "code.wasm")
    (fn_dir / "code.cwasm").write_bytes(wasm.precompile(hello_wasm.read_bytes()))
    job = Job(1, "hello_1", str(fn_dir), "c", b"test data")
    runtimes.run(job)   # the first call loads the module: that is the cold start, not measured here

    out = benchmark(runtimes.run, job)
    assert (out.error, out.exit_code) == (None, 0), out.message
    assert out.stdout == b"Hello from FAAS!\ntest data"


def test_python_call(benchmark, runtimes, tmp_path):
    fn_dir = tmp_path / "greet_1"
    fn_dir.mkdir()
    shutil.copy(EXAMPLES / "greet.py", fn_dir / "code.py")
    job = Job(2, "greet_1", str(fn_dir), "python", b"bench")
    runtimes.run(job)

    # A call costs tens of milliseconds while interpreters start per call: a fixed number of rounds.
    out = benchmark.pedantic(runtimes.run, args=(job,), rounds=30, warmup_rounds=2)
    assert (out.error, out.exit_code) == (None, 0), (out.message, out.stderr)
    assert out.stdout == b"Hello, bench!\n"


FLOOR_CALLS = 300
FLOOR_ROUNDS = 2


def test_python_call_against_its_floor(benchmark, runtimes, tmp_path):
    """A fresh Python call through WorkerRuntimes (sandbox, cgroups and the fork server's
    protocol on) against a bare fork of the same interpreter with the same warm modules running
    the same function (tests/bench/fork_floor.py): what the platform adds to a fork, and the
    floor that bounds issue 20's Python / C on this machine. Alternated rounds, wall time per
    call (each loop is one chain of processes, never two at once)."""
    from reference.functions import toolchains
    from reference.worker.warm import runtimes as warm
    python = toolchains.find("python")
    if python is None:
        pytest.skip("no python3 for functions here")
    fn_dir = tmp_path / "greet_2"
    fn_dir.mkdir()
    shutil.copy(EXAMPLES / "greet.py", fn_dir / "code.py")
    job = Job(3, "greet_2", str(fn_dir), "python", b"")
    runtimes.run(job)
    floor_argv = [python.path, "-I", "-B", str(HERE / "fork_floor.py"), str(pathlib.Path(warm.__file__).parent),
                  str(EXAMPLES / "greet.py"), str(FLOOR_CALLS)]
    figures = {"platform": [], "floor": [], "floor_cpu": []}

    def measure():
        for _ in range(FLOOR_ROUNDS):
            started = time.perf_counter()
            for _ in range(FLOOR_CALLS):
                out = runtimes.run(job)
                assert (out.error, out.exit_code, out.stdout) == (None, 0, b"Hello, world!\n"), out.message
            figures["platform"].append((time.perf_counter() - started) / FLOOR_CALLS * 1e6)
            proc = subprocess.run(floor_argv, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            floor = json.loads(proc.stdout)
            assert floor["failed"] == 0, floor
            figures["floor"].append(floor["us_per_call"])
            figures["floor_cpu"].append(floor["cpu_us_per_call"])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    platform, floor = statistics.median(figures["platform"]), statistics.median(figures["floor"])
    benchmark.extra_info.update(figures)
    section = "a fresh Python call against a bare fork (us a call, %d calls x %d rounds)" % (FLOOR_CALLS, FLOOR_ROUNDS)
    record(section, "bare fork of the warm python3, run, exit", us=round(floor), cpu_us=round(statistics.median(figures["floor_cpu"])))
    record(section, "WorkerRuntimes.run, sandboxed fork server", us=round(platform))
    record(section, "platform / bare fork", ratio=round(platform / floor, 3))
