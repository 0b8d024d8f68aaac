"""Warm interpreters (reference/worker/warm/runtimes.py): which process serves which call, fresh state per call,
the sandbox on warm calls, recycling after limits, eviction and close. Structure, not timing.

Like test_runtimes, the jobs run in a worker-like driver process, never in pytest's own.
"""

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest
from needs import need_sandbox
from test_runtimes import EXAMPLES, FUNCTIONS, make_function, run_jobs

from reference.worker.sandbox import isolation

WARM_PER_RUNTIME = 4    # reference.worker.warm.runtimes.WARM_PER_RUNTIME, the pool size these tests fill


def _times(n, **job):
    return [dict(job) for _ in range(n)]     # run_jobs takes the input out of each dict


def _pids(results):
    return [r["extra"].get("runtime_pid") for r in results]


def test_one_fork_server_serves_consecutive_python_calls(tmp_path):
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    results = run_jobs(*[dict(fn_dir=greet, lang="python", input=name) for name in (b"Ada", b"Bob", b"")])
    assert [r["stdout"] for r in results] == [b"Hello, Ada!\n", b"Hello, Bob!\n", b"Hello, world!\n"]
    assert [r["cold"] for r in results] == [True, False, False]
    pids = _pids(results)
    assert pids[0] and len(set(pids)) == 1, pids
    assert all(r["warm_pids"] == [pids[0]] for r in results)


@pytest.mark.parametrize("lang,file,data,expected", [
    ("python", "greet.py", b"Ada", b"Hello, Ada!\n"),
    ("js", "add.js", b'{"a": 2, "b": 3}', b'{"sum":5}\n'),
    ("php", "hello.php", b"in", b"Hello from PHP!\nin\n"),
], ids=["python", "js", "php"])
def test_the_seed_examples_answer_warm_as_cold(tmp_path, lang, file, data, expected):
    fn = make_function(tmp_path, "fn", lang, EXAMPLES / file)
    warm = run_jobs(*_times(3, fn_dir=fn, lang=lang, input=data))
    cold = run_jobs(*_times(2, fn_dir=fn, lang=lang, input=data), warm=False)
    assert [r["cold"] for r in warm] == [True, False, False]
    assert [r["cold"] for r in cold] == [True, False]
    for r in warm + cold:
        assert (r["stdout"], r["stderr"], r["exit_code"], r["error"]) == (expected, b"", 0, None), r
    assert all("runtime_pid" not in r["extra"] for r in cold)
    if lang == "js":
        # node cannot fork: each call is a process started ahead, never one reused.
        assert len(set(_pids(warm))) == 3
    else:
        # python and php: one fork server, a forked child per call.
        assert len(set(_pids(warm))) == 1


@pytest.mark.parametrize("lang,file,expected", [("python", "counter.py", b"1 False False\n"),
                                                ("js", "counter.js", b"1 false\n"),
                                                ("php", "counter.php", b"1 false\n")],
                         ids=["python", "js", "php"])
def test_state_never_leaks_from_one_call_to_the_next(tmp_path, lang, file, expected):
    fn = make_function(tmp_path, "counter", lang, FUNCTIONS / file)
    results = run_jobs(*_times(3, fn_dir=fn, lang=lang))
    assert [r["stdout"] for r in results] == [expected] * 3, results
    assert [r["cold"] for r in results] == [True, False, False]


def test_a_call_directory_is_handed_on_only_as_it_was_made_and_never_under_a_seen_name(tmp_path):
    """Python calls recycle their directory when the call left it untouched: under a new name,
    empty, 0700. One a call changed (a file, a chmod) is removed and a fresh one made."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os, stat, sys\n"
                     "what = sys.stdin.read()\n"
                     "here = os.getcwd()\n"
                     "print(here, oct(stat.S_IMODE(os.stat(here).st_mode)), sorted(os.listdir(here)))\n"
                     "if what == 'chmod': os.chmod(here, 0o777)\n"
                     "if what == 'file': open('left.txt', 'w').write('x')\n")
    fn = make_function(tmp_path, "probe", "python", probe)
    inputs = [b"", b"chmod", b"", b"file", b"", b""]
    results = run_jobs(*[dict(fn_dir=fn, lang="python", input=data) for data in inputs])
    seen = [r["stdout"].decode().split(" ", 2) for r in results]
    assert all(r["error"] is None for r in results), results
    assert [(mode, listing.strip()) for _, mode, listing in seen] == [("0o700", "[]")] * len(inputs)
    assert len({path for path, _, _ in seen}) == len(inputs)   # a new name every call


def test_different_functions_never_share_a_warm_process(tmp_path):
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    counter = make_function(tmp_path, "counter", "python", FUNCTIONS / "counter.py")
    results = run_jobs(*[dict(fn_dir=d, lang="python") for d in (greet, counter, greet, counter)])
    assert [r["stdout"] for r in results] == [b"Hello, world!\n", b"1 False False\n"] * 2
    pids = _pids(results)
    assert pids[0] == pids[2] and pids[1] == pids[3] and pids[0] != pids[1], pids
    assert results[-1]["warm_pids"] == sorted(set(pids))


def test_the_least_recently_used_is_evicted_and_close_stops_them_all(tmp_path):
    dirs = [make_function(tmp_path, "greet%d" % i, "python", EXAMPLES / "greet.py")
            for i in range(WARM_PER_RUNTIME + 1)]
    leftovers = []
    results = run_jobs(*[dict(fn_dir=d, lang="python") for d in dirs + dirs[-1:] + dirs[:1]], leftovers=leftovers)
    pids = _pids(results)
    assert all(r["stdout"] == b"Hello, world!\n" for r in results)
    assert len(results[WARM_PER_RUNTIME]["warm_pids"]) == WARM_PER_RUNTIME
    assert pids[0] not in results[WARM_PER_RUNTIME]["warm_pids"]     # the oldest made room
    assert results[-2]["cold"] is False and pids[-2] == pids[WARM_PER_RUNTIME]
    assert results[-1]["cold"] is True and pids[-1] != pids[0]       # evicted, so started again
    assert leftovers == []
    assert not any(os.path.exists("/proc/%d" % pid) for pid in set(pids))


@pytest.mark.parametrize("lang,file", [("python", "env.py"), ("js", "env.js")])
def test_warm_calls_get_an_empty_environment(tmp_path, lang, file, monkeypatch):
    monkeypatch.setenv("FAAS_SECRET_FOR_TEST", "do-not-leak")
    fn = make_function(tmp_path, "env", lang, FUNCTIONS / file)
    results = run_jobs(*_times(2, fn_dir=fn, lang=lang))
    assert results[1]["cold"] is False
    for r in results:
        assert "FAAS_SECRET" not in r["stdout"].decode() and b"PATH" in r["stdout"], r


def test_warm_python_calls_keep_the_sandbox(tmp_path):
    """The sandbox user, and no descendant outliving its call, on calls served by the fork server."""
    shadow = make_function(tmp_path, "shadow", "python", FUNCTIONS / "shadow.py")
    background = make_function(tmp_path, "background", "python", FUNCTIONS / "background.py")
    results = run_jobs(*[dict(fn_dir=d, lang="python") for d in (shadow, shadow, background, background)])
    assert [r["cold"] for r in results] == [True, False, True, False]
    if os.geteuid() == 0:
        assert all(r["stdout"] in (b"DENIED PermissionError\n", b"DENIED FileNotFoundError\n")
                   for r in results[:2]), results
    for r in results[2:]:
        assert r["exit_code"] == 0 and r["children_after"] == [], r
        pid = int(r["stdout"])
        assert not os.path.exists("/proc/%d" % pid) or _not_sleep(pid)


def _not_sleep(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"sleep" not in f.read()
    except OSError:
        return True


@pytest.mark.parametrize("file,job,error", [("loop.py", dict(timeout_ms=300), "timeout"),
                                            ("memhog.py", dict(memory_mb=64), "memory")])
def test_a_limit_fires_warm_and_the_fork_server_is_recycled(tmp_path, file, job, error):
    fn = make_function(tmp_path, "limited", "python", FUNCTIONS / file)
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    results = run_jobs(dict(fn_dir=greet, lang="python"), *_times(2, fn_dir=fn, lang="python", **job),
                       dict(fn_dir=greet, lang="python"))
    first, second = results[1:3]
    assert first["error"] == second["error"] == error, results
    # Replaced after the error: the second call started a new fork server.
    assert second["cold"] is True and _pids([first]) != _pids([second])
    assert second["children_after"] == [] and second["warm_pids"] == [results[0]["extra"]["runtime_pid"]]
    # Other functions' fork servers are untouched.
    assert results[3]["cold"] is False and results[3]["stdout"] == b"Hello, world!\n"


def test_a_sandboxed_function_cannot_interrupt_stop_or_kill_its_fork_server(tmp_path):
    """The fork server is its sandbox's init: SIGINT, SIGTERM, SIGHUP, SIGSTOP and SIGKILL from
    its call are lost, the call ends well, and the next call is warm in the same fork server.
    The call's own SIGINT is a KeyboardInterrupt, as under a plain python3."""
    need_sandbox()
    fn = make_function(tmp_path, "signaller", "python", FUNCTIONS / "signal_parent.py")
    results = run_jobs(*_times(2, fn_dir=fn, lang="python"))
    for r in results:
        assert (r["error"], r["exit_code"], r["stdout"]) == (None, 0, b"interrupted\nstill here\n"), r
        assert r["children_after"] == [] and r["warm_pids"] == [_pids(results)[0]]
    assert [r["cold"] for r in results] == [True, False]
    assert _pids(results)[0] == _pids(results)[1]


@pytest.mark.parametrize("lang,file", [("python", "killparent.py"), ("php", "php_killparent.php")],
                         ids=["python", "php"])
def test_without_a_sandbox_a_function_that_kills_its_fork_server_is_an_error_and_the_next_call_starts_afresh(
        tmp_path, monkeypatch, lang, file):
    monkeypatch.setenv("FAAS_NO_BWRAP", "1")
    fn = make_function(tmp_path, "killer", lang, FUNCTIONS / file)
    results = run_jobs(*_times(2, fn_dir=fn, lang=lang))
    for r in results:
        assert r["error"] == "runtime" and r["cold"] is True, r
        assert r["children_after"] == [] and r["warm_pids"] == []
    assert _pids(results)[0] != _pids(results)[1]


def test_one_php_fork_server_serves_consecutive_calls_each_with_its_input(tmp_path):
    hello = make_function(tmp_path, "hello", "php", EXAMPLES / "hello.php")
    results = run_jobs(*[dict(fn_dir=hello, lang="php", input=data) for data in (b"Ada", b"", b"Bob")])
    assert [r["stdout"] for r in results] == [b"Hello from PHP!\nAda\n", b"Hello from PHP!\n", b"Hello from PHP!\nBob\n"]
    assert [r["cold"] for r in results] == [True, False, False]
    pids = _pids(results)
    assert pids[0] and len(set(pids)) == 1 and all(r["warm_pids"] == [pids[0]] for r in results), results


def test_php_fork_servers_after_the_first_skip_the_probe_and_still_end_calls_with_their_status(tmp_path):
    """The first PHP fork server of a worker finds where php keeps its exit status and says so;
    the next ones (other functions) are given it."""
    source = tmp_path / "exits.php"
    source.write_bytes(b'<?php echo "out\\n"; exit((int) trim(stream_get_contents(STDIN)));')
    fns = [make_function(tmp_path, "exits%d" % i, "php", source) for i in range(3)]
    results = run_jobs(*[dict(fn_dir=fn, lang="php", input=b"%d" % (i + 3)) for i, fn in enumerate(fns)])
    assert [(r["exit_code"], r["stdout"], r["cold"]) for r in results] == [(3, b"out\n", True), (4, b"out\n", True),
                                                                           (5, b"out\n", True)]
    assert len(set(_pids(results))) == 3


def test_a_warm_php_call_leaves_nothing_for_the_next(tmp_path):
    """No file in /tmp or /dev/shm, static, constant, ini setting or process of one call is seen
    by the next, and what it left running is dead when the call ends."""
    if not isolation.sandboxed():
        pytest.skip("without bubblewrap /tmp and /dev/shm are the host's, shared by every call")
    fn = make_function(tmp_path, "leftovers", "php", FUNCTIONS / "php_leftovers.php")
    hello = make_function(tmp_path, "hello", "php", EXAMPLES / "hello.php")
    results = run_jobs(*_times(3, fn_dir=fn, lang="php"), dict(fn_dir=hello, lang="php", input=b"x"))
    assert [r["cold"] for r in results] == [True, False, False, True]
    for r in results[:3]:
        assert r["exit_code"] == 0 and r["stdout"].split()[0] == b"fresh", r
        assert r["children_after"] == [], r
    assert len(set(_pids(results[:3]))) == 1
    # Another function's fork server is another process, unaffected.
    assert results[3]["stdout"] == b"Hello from PHP!\nx\n" and _pids(results)[3] != _pids(results)[0]


@pytest.mark.parametrize("source,job,error", [(b"<?php\nwhile (true) {}\n", dict(timeout_ms=300), "timeout"),
                                              ((FUNCTIONS / "memhog.php").read_bytes(), dict(memory_mb=64), "memory")],
                         ids=["timeout", "memory"])
def test_a_limit_fires_warm_in_php_and_the_fork_server_is_recycled(tmp_path, source, job, error):
    code = tmp_path / "limited.php"
    code.write_bytes(source)
    fn = make_function(tmp_path, "limited", "php", code)
    hello = make_function(tmp_path, "hello", "php", EXAMPLES / "hello.php")
    results = run_jobs(dict(fn_dir=hello, lang="php"), *_times(2, fn_dir=fn, lang="php", **job),
                       dict(fn_dir=hello, lang="php"))
    first, second = results[1:3]
    assert first["error"] == second["error"] == error, results
    assert second["cold"] is True and _pids([first]) != _pids([second])
    assert second["children_after"] == [] and second["warm_pids"] == [results[0]["extra"]["runtime_pid"]]
    assert results[3]["cold"] is False and results[3]["stdout"] == b"Hello from PHP!\n"


def test_a_sandboxed_php_function_cannot_kill_its_fork_server(tmp_path):
    need_sandbox()
    fn = make_function(tmp_path, "killer", "php", FUNCTIONS / "php_killparent.php")
    results = run_jobs(*_times(2, fn_dir=fn, lang="php"))
    for r in results:
        assert (r["error"], r["exit_code"], r["stdout"]) == (None, 0, b"still here\n"), r
        assert r["children_after"] == [] and r["warm_pids"] == [_pids(results)[0]]
    assert [r["cold"] for r in results] == [True, False]


def test_php_errors_and_exit_status_warm_as_cold(tmp_path):
    source = tmp_path / "fails.php"
    source.write_bytes(b'<?php\n$in = trim(stream_get_contents(STDIN));\nfwrite(STDERR, "err " . $in . "\\n");\n'
                       b'if ($in === "throw") { throw new Exception("boom"); }\nexit((int) $in);\n')
    fn = make_function(tmp_path, "fails", "php", source)
    jobs = [dict(fn_dir=fn, lang="php", input=data) for data in (b"3", b"0", b"throw")]
    warm = run_jobs(*[dict(j) for j in jobs])
    cold = run_jobs(*[dict(j) for j in jobs], warm=False)
    assert [r["exit_code"] for r in warm] == [r["exit_code"] for r in cold] == [3, 0, 255]
    for w, c in zip(warm, cold):
        assert w["stderr"].splitlines()[0] == c["stderr"].splitlines()[0], (w, c)
    assert b"Uncaught Exception: boom in code.php:4" in warm[2]["stderr"], warm[2]


PHP_ENDINGS = {
    "plain": b'<?php echo "hi";',
    "exit": b'<?php echo "a"; exit(7);',
    "exit_string": b'<?php exit("bye\\n");',
    "order": b'<?php class D { function __destruct() { echo "destructed\\n"; } }\n$d = new D;\n'
             b'register_shutdown_function(function () { echo "shutdown\\n"; register_shutdown_function(function () { echo "late\\n"; exit(4); }); });\n'
             b'ob_start(); echo "buffered\\n";',
    "cleaned": b'<?php echo "gone"; while (ob_get_level()) { ob_end_clean(); } echo "kept\\n"; exit(2);',
    "fatal_in_destructor": b'<?php class D { function __destruct() { undefined_function(); } } $d = new D; echo "x\\n";',
    "big": b'<?php for ($i = 0; $i < 3000; $i++) { echo str_repeat("y", 999), "\\n"; } exit(5);',
    "proc_open": b'<?php $p = proc_open("sleep 0.2; echo late >&2", [], $pipes); echo "p\\n";',
}


@pytest.mark.parametrize("name", sorted(PHP_ENDINGS))
def test_a_warm_php_call_ends_as_a_plain_php(tmp_path, name):
    """Exit status, shutdown functions, destructors and output buffers, in php's order, warm as
    cold (the warm call leaves without php's module shutdown; ob_get_level() is 1 more there)."""
    source = tmp_path / "end.php"
    source.write_bytes(PHP_ENDINGS[name])
    fn = make_function(tmp_path, "end", "php", source)
    warm = run_jobs(*_times(2, fn_dir=fn, lang="php"))
    cold = run_jobs(*_times(1, fn_dir=fn, lang="php"), warm=False)
    assert warm[1]["cold"] is False
    for w in warm:
        got = (w["stdout"], w["exit_code"], w["truncated"], w["stderr"].splitlines()[:1])
        assert got == (cold[0]["stdout"], cold[0]["exit_code"], cold[0]["truncated"], cold[0]["stderr"].splitlines()[:1]), (w, cold[0])
        assert w["children_after"] == []


def test_exit_status_atexit_and_threads_as_a_plain_python3(tmp_path):
    exits = make_function(tmp_path, "exits", "python", FUNCTIONS / "exits.py")
    syntax = make_function(tmp_path, "syntax", "python", FUNCTIONS / "syntax.py")
    fail = make_function(tmp_path, "fail", "python", FUNCTIONS / "fail.py")
    results = run_jobs(*[dict(fn_dir=d, lang="python") for d in (exits, exits, syntax, syntax, fail, fail)])
    for r in results[:2]:
        assert (r["exit_code"], r["error"], r["stdout"]) == (4, None, b"thread done\natexit ran\n"), r
    for r in results[2:4]:
        assert r["exit_code"] == 1 and r["error"] is None, r
        assert b'File "function.py", line 2' in r["stderr"] and b"SyntaxError" in r["stderr"]
    for r in results[4:]:
        assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, b"partial output\n", b"something went wrong\n")
    # A function's own failure is not the fork server's: it stays warm.
    assert [r["cold"] for r in results] == [True, False] * 3


def test_a_new_worker_sweeps_call_directories_of_dead_workers(tmp_path):
    """A killed worker leaves the directories of the interpreters it had started ahead."""
    scratch = pathlib.Path(tempfile.gettempdir()) / ("minifaas-calls-%d" % os.geteuid())
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = scratch / ("call-%d-test" % ended.pid)
    alive = scratch / ("call-%d-test" % os.getpid())
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    for path in (dead, alive):
        path.mkdir(parents=True)
        (path / "code.js").write_text("left over")
    try:
        assert run_jobs(dict(fn_dir=greet, lang="python"))[0]["stdout"] == b"Hello, world!\n"
        assert not dead.exists() and alive.exists()
    finally:
        for path in (dead, alive):
            shutil.rmtree(path, ignore_errors=True)
