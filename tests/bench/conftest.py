"""Fixtures and rules of the benchmark suite (`tox -e bench`, i.e. `pytest tests/bench --benchmark-only`).

Benchmark files are named bench_*.py and collected only under --benchmark-only, so the normal
test run never times anything. Benchmarks that run wasmtime or the worker runtimes inside the
pytest process are moved to the end: from then on nothing starts a stack (see issue 2 on
wasmtime and fork, and runtimes' child reaping, which would take a running stack for a stray).
Figures that are not pytest-benchmark timings (ratios, requests/s) are printed in the summary.
"""

import json
import os
import sys

import pytest
from benchpaths import EXAMPLES, HERE
from figures import FIGURES


def pytest_configure(config):
    config.addinivalue_line("markers", "in_process_runtime: runs wasmtime or a WorkerRuntimes in the pytest process; ordered last")


def pytest_collect_file(file_path, parent):
    # A bench file named on the command line is collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        if parent.config.getoption("benchmark_only", False):
            return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session, config, items):
    # Stable sort: everything else keeps its order, in-process runtimes go last.
    items.sort(key=lambda item: item.get_closest_marker("in_process_runtime") is not None)


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    tr = terminalreporter
    tr.section("Mini FaaS figures (requests/s and ratios; same run, same machine)")
    section = None
    for sec, name, values in FIGURES:
        if sec != section:
            tr.write_line("")
            tr.write_line("[%s]" % sec)
            section = sec
        shown = ", ".join("%s=%s" % (k, _fmt(v)) for k, v in values.items())
        tr.write_line("  %-34s %s" % (name, shown))
    path = os.environ.get("FAAS_BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump([{"section": s, "name": n, **v} for s, n, v in FIGURES], f, indent=2, sort_keys=True)
            f.write("\n")
        tr.write_line("figures written to %s" % path)


def _fmt(value):
    if isinstance(value, float):
        return "%.3f" % value if abs(value) < 10 else "%.1f" % value
    return str(value)


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def hello_wasm(tmp_path_factory):
    """examples/hello.c compiled to WASI with this machine's toolchain: the path of code.wasm."""
    sys.path.insert(0, str(HERE.parent))
    from needs import need_toolchain
    need_toolchain("c")
    from reference.functions import toolchains
    compiled = toolchains.compile_to_wasm("c", (EXAMPLES / "hello.c").read_bytes())
    path = tmp_path_factory.mktemp("hello-wasm") / "code.wasm"
    path.write_bytes(compiled.wasm)
    return path
