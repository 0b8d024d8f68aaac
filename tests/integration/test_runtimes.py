"""Worker runtimes on real functions: every language's example, every limit, and the sandbox.

The jobs run in a separate Python process (a driver playing the worker), as in the platform:
wasmtime runs WASI programs there, never in the pytest process that forks later.
"""

import base64
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from needs import need_toolchain

from reference.functions import toolchains
from reference.functions.languages import LANGUAGES
from reference.worker.wasm import engine as wasm

from support import ROOT  # noqa: E402
EXAMPLES = ROOT / "examples"
FUNCTIONS = ROOT / "tests" / "functions"

DRIVER = r"""
import base64, json, os, sys
from reference.wire.jobs import Job
from reference.worker.runtimes import WorkerRuntimes
from reference.worker.sandbox.process import _stray_children, own_children

runtimes = WorkerRuntimes(warm=sys.argv[1] == "warm")
results = []
for spec in json.load(sys.stdin):
    spec["input"] = base64.b64decode(spec["input"])
    out = runtimes.run(Job(**spec))
    results.append(dict(exit_code=out.exit_code, stdout=base64.b64encode(out.stdout).decode(),
                        stderr=base64.b64encode(out.stderr).decode(), truncated=out.truncated,
                        error=out.error, message=out.message, cold=out.cold, init_ms=out.init_ms,
                        exec_ms=out.exec_ms, extra=out.extra, children_after=_stray_children(),
                        warm_pids=sorted(own_children)))
runtimes.close()
# After close the worker has no child at all, warm or not.
json.dump(dict(results=results, after_close=_stray_children() + sorted(own_children)), sys.stdout)
"""

_wasm_cache = {}


def make_function(root, name, lang, source):
    """A function directory as storage lays it out: code.<ext>, plus code.wasm and code.cwasm."""
    fn_dir = root / name
    fn_dir.mkdir()
    src = source.read_bytes()
    (fn_dir / ("code." + LANGUAGES[lang].ext)).write_bytes(src)
    if LANGUAGES[lang].compiled:
        need_toolchain(lang)
        key = (lang, src)
        if key not in _wasm_cache:
            module = toolchains.compile_to_wasm(lang, src).wasm
            _wasm_cache[key] = (module, wasm.precompile(module))
        (fn_dir / "code.wasm").write_bytes(_wasm_cache[key][0])
        (fn_dir / "code.cwasm").write_bytes(_wasm_cache[key][1])
    else:
        need_toolchain(lang)
    return str(fn_dir)


def run_jobs(*jobs, warm=True, leftovers=None):
    """Run the jobs one after the other in one fresh worker-like process; their Outcomes as dicts.
    warm=False runs every interpreter call cold; `leftovers`, a list, gets the worker's children
    after close."""
    specs = []
    for i, job in enumerate(jobs):
        spec = dict(job_id=i, input=base64.b64encode(job.pop("input", b"")).decode())
        spec.update(job)
        spec.setdefault("fn_id", os.path.basename(spec["fn_dir"]))
        specs.append(spec)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "warm" if warm else "cold"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(specs).encode(), timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        pytest.fail("driver failed (%s):\n%s" % (proc.returncode, err.decode(errors="replace")))
    answer = json.loads(out)
    results = answer["results"]
    if leftovers is not None:
        leftovers.extend(answer["after_close"])
    for r in results:
        r["stdout"], r["stderr"] = base64.b64decode(r["stdout"]), base64.b64decode(r["stderr"])
    return results


def run_one(tmp_path, lang, source, name="fn", **job):
    fn_dir = make_function(tmp_path, name, lang, source)
    return run_jobs(dict(fn_dir=fn_dir, lang=lang, **job))[0]


EXAMPLE_CASES = [
    ("c", "hello.c", b"test data", b"Hello from FAAS!\ntest data"),
    ("rust", "hello.rs", b"abc", b"Hello from Rust!\nabc\n"),
    ("go", "hello.go", b"xyz", b"Hello from Go!\nxyz\n"),
    ("js", "add.js", b'{"a": 2, "b": 3}', b'{"sum":5}\n'),
    ("python", "greet.py", b"Ada", b"Hello, Ada!\n"),
    ("php", "hello.php", b"in", b"Hello from PHP!\nin\n"),
    ("html", "hello.html", b"", (EXAMPLES / "hello.html").read_bytes()),
]


@pytest.mark.parametrize("lang,file,data,expected", EXAMPLE_CASES, ids=[c[0] for c in EXAMPLE_CASES])
def test_each_example_runs_with_its_input(tmp_path, lang, file, data, expected):
    out = run_one(tmp_path, lang, EXAMPLES / file, input=data)
    assert (out["error"], out["exit_code"]) == (None, 0), out
    assert out["stdout"] == expected and out["stderr"] == b""
    assert out["truncated"] is False and out["cold"] is True


def test_add_takes_a_json_array_too(tmp_path):
    out = run_one(tmp_path, "js", EXAMPLES / "add.js", input=b"[1, 2, 3]")
    assert out["stdout"] == b'{"sum":6}\n'


def test_spin_busy_loops_for_the_asked_time(tmp_path):
    out = run_one(tmp_path, "c", EXAMPLES / "spin.c", input=b"30")
    assert out["exit_code"] == 0 and out["stdout"].startswith(b"spun ")
    assert float(out["stdout"].split()[1]) >= 30


def test_binary_input_reaches_stdin_unchanged(tmp_path):
    data = bytes(range(256)) * 4
    out = run_one(tmp_path, "c", EXAMPLES / "hello.c", input=data)
    assert out["stdout"] == b"Hello from FAAS!\n" + data


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_inputs_on_both_sides_of_the_pipe_buffer_arrive_whole(tmp_path, warm):
    """Up to 64 KiB the input goes through a pipe, beyond it through a file: both whole."""
    echo = tmp_path / "echo.py"
    echo.write_text("import hashlib, sys\ndata = sys.stdin.buffer.read()\n"
                    "print(len(data), hashlib.sha256(data).hexdigest())\n")
    fn_dir = make_function(tmp_path, "echo", "python", echo)
    sizes = [0, 65536, 65537, 300_000]
    inputs = [os.urandom(n) for n in sizes]
    results = run_jobs(*[dict(fn_dir=fn_dir, lang="python", input=data) for data in inputs], warm=warm)
    assert [r["stdout"] for r in results] == [b"%d %s\n" % (len(d), hashlib.sha256(d).hexdigest().encode())
                                              for d in inputs]


def test_first_call_is_cold_then_warm_and_timed(tmp_path):
    fn_dir = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    py_dir = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    results = run_jobs(*[dict(fn_dir=d, lang=lang) for d, lang in
                         [(fn_dir, "c"), (fn_dir, "c"), (py_dir, "python"), (py_dir, "python")]])
    assert [r["cold"] for r in results] == [True, False, True, False]
    assert all(r["exec_ms"] > 0 and r["init_ms"] >= 0 for r in results)
    assert all(r["stdout"] for r in results)


@pytest.mark.parametrize("lang,file", [("c", "fail.c"), ("python", "fail.py")])
def test_nonzero_exit_keeps_output_and_stderr(tmp_path, lang, file):
    out = run_one(tmp_path, lang, FUNCTIONS / file)
    assert out["exit_code"] == 3 and out["error"] is None
    assert out["stdout"] == b"partial output\n" and out["stderr"] == b"something went wrong\n"


def test_tracebacks_do_not_show_scratch_paths(tmp_path):
    out = run_one(tmp_path, "python", FUNCTIONS / "memhog.py", memory_mb=64)
    assert b'File "function.py"' in out["stderr"] and b"minifaas-worker-" not in out["stderr"]


def test_a_trap_is_a_runtime_error(tmp_path):
    out = run_one(tmp_path, "c", FUNCTIONS / "trap.c")
    assert out["error"] == "runtime" and out["exit_code"] != 0
    assert "trapped" in out["message"]


@pytest.mark.parametrize("lang,file", [("c", "loop.c"), ("python", "loop.py"), ("js", "loop.js")])
def test_timeout_stops_the_function_and_the_worker_carries_on(tmp_path, lang, file):
    loop_dir = make_function(tmp_path, "loop", lang, FUNCTIONS / file)
    hello_dir = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    looped, after = run_jobs(dict(fn_dir=loop_dir, lang=lang, timeout_ms=300),
                             dict(fn_dir=hello_dir, lang="c"))
    assert looped["error"] == "timeout", looped
    assert "300 ms" in looped["message"]
    assert after["error"] is None and after["stdout"] == b"Hello from FAAS!\n"


def test_a_wasm_timeout_fires_after_the_worker_sat_idle(tmp_path):
    """The deadline watch parks while no wasm call runs; the next call must still be stopped."""
    nap = tmp_path / "nap.py"
    nap.write_text("import time\ntime.sleep(1.5)\n")
    nap_dir = make_function(tmp_path, "nap", "python", nap)
    loop_dir = make_function(tmp_path, "loop", "c", FUNCTIONS / "loop.c")
    hello_dir = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    _, napped, looped = run_jobs(dict(fn_dir=hello_dir, lang="c"), dict(fn_dir=nap_dir, lang="python"),
                                 dict(fn_dir=loop_dir, lang="c", timeout_ms=300))
    assert napped["error"] is None, napped
    assert looped["error"] == "timeout", looped


@pytest.mark.parametrize("lang,file,memory_mb", [("c", "memhog.c", 32), ("python", "memhog.py", 64),
                                                  ("js", "memhog.js", 64), ("php", "memhog.php", 32)])
def test_memory_limit(tmp_path, lang, file, memory_mb):
    out = run_one(tmp_path, lang, FUNCTIONS / file, memory_mb=memory_mb)
    assert out["error"] == "memory", out
    assert "%d MiB" % memory_mb in out["message"]


@pytest.mark.parametrize("lang,file", [("c", "bigout.c"), ("python", "bigout.py")])
def test_output_beyond_the_limit_is_cut(tmp_path, lang, file):
    out = run_one(tmp_path, lang, FUNCTIONS / file)
    assert out["truncated"] is True and out["exit_code"] == 0 and out["error"] is None
    assert out["stdout"] == (b"x" * 1023 + b"\n") * 1024


def test_output_limit_is_per_job(tmp_path):
    out = run_one(tmp_path, "python", FUNCTIONS / "bigout.py", output_limit=1000)
    assert out["truncated"] is True and len(out["stdout"]) == 1000


@pytest.mark.parametrize("lang,file", [("python", "env.py"), ("js", "env.js")])
def test_interpreters_get_an_empty_environment(tmp_path, lang, file, monkeypatch):
    monkeypatch.setenv("FAAS_SECRET_FOR_TEST", "do-not-leak")
    out = run_one(tmp_path, lang, FUNCTIONS / file)
    env = json.loads(out["stdout"])
    # PATH is the one variable given; Python adds LC_CTYPE itself when the locale is C, and
    # bubblewrap sets PWD after its --chdir.
    assert set(env) <= {"PATH", "LC_CTYPE", "PWD"}, env
    assert "do-not-leak" not in out["stdout"].decode()


def test_wasm_gets_no_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FAAS_SECRET_FOR_TEST", "do-not-leak")
    out = run_one(tmp_path, "c", FUNCTIONS / "env.c")
    assert out["exit_code"] == 0 and out["stdout"] == b""


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the platform runs as root")
def test_function_cannot_read_shadow_when_platform_is_root(tmp_path):
    out = run_one(tmp_path, "python", FUNCTIONS / "shadow.py")
    # In bubblewrap the file is not even there; without it, it is not readable.
    assert out["stdout"] in (b"DENIED PermissionError\n", b"DENIED FileNotFoundError\n"), out


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the platform runs as root")
def test_function_cannot_read_another_functions_code(tmp_path):
    os.chmod(tmp_path, 0o700)
    other = make_function(tmp_path, "other", "python", EXAMPLES / "greet.py")
    out = run_one(tmp_path, "python", FUNCTIONS / "readfile.py", input=(other + "/code.py").encode())
    assert out["stdout"] in (b"DENIED PermissionError\n", b"DENIED FileNotFoundError\n"), out


def test_a_detached_background_child_does_not_outlive_the_call(tmp_path):
    out = run_one(tmp_path, "python", FUNCTIONS / "background.py")
    assert out["exit_code"] == 0, out
    pid = int(out["stdout"])
    assert out["children_after"] == []
    # Killed and reaped while the worker was still alive: no such process any more.
    assert not os.path.exists("/proc/%d" % pid) or _is_not_sleep(pid)


def _is_not_sleep(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"sleep" not in f.read()
    except OSError:
        return True


def test_a_missing_function_directory_is_a_runtime_error(tmp_path):
    results = run_jobs(dict(fn_dir=str(tmp_path / "gone"), lang="python"),
                       dict(fn_dir=str(tmp_path / "gone-too"), lang="c"))
    assert [r["error"] for r in results] == ["runtime", "runtime"]
    assert all(r["message"] for r in results)


def test_module_loads_from_code_wasm_when_cwasm_is_missing_or_stale(tmp_path):
    fn_dir = pathlib.Path(make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c"))
    other = pathlib.Path(make_function(tmp_path, "hello2", "c", EXAMPLES / "hello.c"))
    (fn_dir / "code.cwasm").unlink()
    (other / "code.cwasm").write_bytes(b"not an artifact")
    results = run_jobs(dict(fn_dir=str(fn_dir), lang="c"), dict(fn_dir=str(other), lang="c"))
    assert [r["stdout"] for r in results] == [b"Hello from FAAS!\n"] * 2
