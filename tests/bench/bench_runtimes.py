"""One call through reference.worker.runtimes.WorkerRuntimes, as a worker makes it: hello.c in wasmtime
(precompiled artifact, cached InstancePre, fresh instance per call) and greet.py under python3.

These run wasmtime and reap children in the pytest process, so conftest orders them last."""

import shutil

import pytest
from benchpaths import EXAMPLES

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
