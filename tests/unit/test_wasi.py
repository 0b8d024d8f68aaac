"""The platform's own WASI (reference/worker/wasm/wasi.py) seen from real C and Go programs in a worker-like
process: what a function may use works, what it may not touch answers an error, and no bad
pointer or sleep escapes the worker's limits."""

import time

import pytest
from test_runtimes import EXAMPLES, FUNCTIONS, make_function, run_jobs, run_one


def facts(out):
    return dict(line.split(" ", 1) for line in out["stdout"].decode().splitlines())


def test_a_c_program_sees_argv_clocks_random_and_its_input(tmp_path):
    first, second = run_jobs(*[dict(fn_dir=make_function(tmp_path, "wasi%d" % i, "c", FUNCTIONS / "wasi.c"),
                                    lang="c", input=b"x" * 2500) for i in range(2)])
    assert (first["error"], first["exit_code"]) == (None, 0), first
    seen = facts(first)
    assert (seen["argc"], seen["argv0"]) == ("1", "function")
    assert abs(float(seen["realtime"]) - time.time()) < 600
    assert float(seen["slept_ms"]) >= 30             # a sleep is never cut short
    assert seen["random"].endswith(" differ")
    assert facts(second)["random"] != seen["random"]
    assert seen["stdin_bytes"] == "2500"
    assert first["stderr"] == b"to stderr\n"


def test_files_and_other_descriptors_are_out_of_reach(tmp_path):
    seen = facts(run_one(tmp_path, "c", FUNCTIONS / "wasi.c"))
    assert seen["fopen"] != "opened"
    assert seen["other_fd"] == "8"                   # EBADF


def test_a_pointer_outside_memory_is_an_error_not_a_crash(tmp_path):
    seen = facts(run_one(tmp_path, "c", FUNCTIONS / "wasi.c"))
    assert seen["bad_pointer"] == "21"               # EFAULT, and the program carried on


def test_a_sleep_ends_at_the_time_limit(tmp_path):
    sleeper = make_function(tmp_path, "sleep", "c", FUNCTIONS / "sleep.c")
    hello = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    short, long, after = run_jobs(dict(fn_dir=sleeper, lang="c", input=b"20"),
                                  dict(fn_dir=sleeper, lang="c", input=b"60000", timeout_ms=300),
                                  dict(fn_dir=hello, lang="c"))
    assert short["stdout"] == b"awake after 20 ms\n" and short["error"] is None
    assert long["error"] == "timeout" and long["stdout"] == b"", long
    assert after["stdout"] == b"Hello from FAAS!\n"


def test_go_sleeps_and_reads_its_clocks(tmp_path):
    out = run_one(tmp_path, "go", FUNCTIONS / "sleep.go")
    assert (out["error"], out["exit_code"]) == (None, 0), out
    assert int(facts(out)["slept_ms"]) >= 30


@pytest.mark.parametrize("code", [0, 3])
def test_exit_codes_come_through_proc_exit(tmp_path, code):
    source = tmp_path / "exit.c"
    source.write_text('#include <stdlib.h>\n#include <stdio.h>\nint main(void) { puts("bye"); exit(%d); }\n' % code)
    out = run_one(tmp_path, "c", source)
    assert (out["exit_code"], out["error"], out["stdout"]) == (code, None, b"bye\n"), out


def test_a_module_without_start_is_a_runtime_error(tmp_path):
    import wasmtime

    fn_dir = tmp_path / "reactor"
    fn_dir.mkdir()
    (fn_dir / "code.c").write_text("/* built elsewhere */\n")
    (fn_dir / "code.wasm").write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))
    hello = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    out, after = run_jobs(dict(fn_dir=str(fn_dir), lang="c"), dict(fn_dir=hello, lang="c"))
    assert out["error"] == "runtime" and "_start" in out["message"], out
    assert after["stdout"] == b"Hello from FAAS!\n"
