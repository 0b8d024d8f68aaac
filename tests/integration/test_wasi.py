"""The platform's own WASI (reference/worker/wasm/wasi.py) seen from real C and Go programs in a worker-like
process: what a function may use works, what it may not touch answers an error, and no bad
pointer or sleep escapes the worker's limits."""

import time

import pytest
from needs import need_toolchain
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


# --- host costs (issue 14): hand-written modules that call one host function and exit with
# its errno, or print what it did -----------------------------------------------------------

WAT_HEAD = '''(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 2)
'''


def wat_function(tmp_path, name, body):
    import wasmtime

    fn_dir = tmp_path / name
    fn_dir.mkdir()
    (fn_dir / "code.c").write_text("/* hand-written */\n")
    (fn_dir / "code.wasm").write_bytes(wasmtime.wat2wasm(WAT_HEAD + body + ")"))
    return str(fn_dir)


def test_random_get_checks_bounds_before_it_makes_a_byte(tmp_path):
    """4 GiB asked at the end of a 128 KiB memory: EFAULT at once, nothing allocated."""
    fn = wat_function(tmp_path, "random", '''
  (func (export "_start") (call $exit (call $random (i32.const 65536) (i32.const -16))))''')
    out = run_jobs(dict(fn_dir=fn, lang="c"))[0]
    assert (out["exit_code"], out["error"]) == (21, None), out


@pytest.mark.parametrize("count", [-1, 1025, 0x7FFFFFFF])
def test_a_negative_or_huge_iovec_count_is_einval_with_a_reason(tmp_path, count):
    fn = wat_function(tmp_path, "iov", '''
  (func (export "_start") (call $exit (call $write (i32.const 1) (i32.const 0) (i32.const %d) (i32.const 64))))''' % count)
    out = run_jobs(dict(fn_dir=fn, lang="c"))[0]
    assert (out["exit_code"], out["error"]) == (28, None), out
    assert "iovec count of %d" % count in out["extra"]["wasi"][0]


def test_one_fd_write_copies_at_most_the_output_limit(tmp_path):
    """1024 iovecs of 64 KiB each (64 MiB in one call, the same page over and over): all counted
    as written, the output cut at its limit."""
    fn = wat_function(tmp_path, "big", '''
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
    (loop $fill
      (i32.store (i32.mul (local.get $i) (i32.const 8)) (i32.const 65536))
      (i32.store (i32.add (i32.mul (local.get $i) (i32.const 8)) (i32.const 4)) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 1024))))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1024) (i32.const 8192)))
    (call $exit (i32.eq (i32.load (i32.const 8192)) (i32.const 67108864))))''')
    out = run_jobs(dict(fn_dir=fn, lang="c", output_limit=1000))[0]
    assert out["exit_code"] == 1 and out["error"] is None, out     # written == 64 MiB
    assert out["stdout"] == b"x" * 1000 and out["truncated"] is True


def test_endless_fd_writes_stop_at_the_deadline(tmp_path):
    fn = wat_function(tmp_path, "spam", '''
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $again
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8192)))
      (br $again)))''')
    hello = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    out, after = run_jobs(dict(fn_dir=fn, lang="c", timeout_ms=300), dict(fn_dir=hello, lang="c"))
    assert out["error"] == "timeout" and out["truncated"] is True, out
    assert after["stdout"] == b"Hello from FAAS!\n"


def test_a_fault_part_way_through_fd_read_loses_no_input(tmp_path):
    """Two iovecs, the second outside memory: the first gets 3 bytes, reported as a short read;
    the next fd_read gets the rest. The module echoes what it read."""
    fn = wat_function(tmp_path, "read", '''
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 3))
    (i32.store (i32.const 8) (i32.const -16))
    (i32.store (i32.const 12) (i32.const 3))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 64)))
    (local.set $n (i32.load (i32.const 64)))
    (i32.store (i32.const 0) (i32.add (i32.const 256) (local.get $n)))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 68)))
    (i32.store (i32.const 16) (i32.const 256))
    (i32.store (i32.const 20) (i32.add (local.get $n) (i32.load (i32.const 68))))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 72)))
    (call $exit (local.get $n)))''')
    out = run_jobs(dict(fn_dir=fn, lang="c", input=b"abcdef"))[0]
    assert (out["exit_code"], out["stdout"]) == (3, b"abcdef"), out


def test_an_import_no_worker_provides_is_refused_at_deploy_and_explained_at_run(tmp_path):
    import wasmtime

    from reference.functions import toolchains
    from reference.wire.errors import CompileError
    from reference.worker.wasm.wasi import unresolved_imports

    wat = '''(module (import "env" "secret_host_call" (func (param i32)))
                     (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                     (import "env" "memory" (memory 1))
                     (func (export "_start")))'''
    assert unresolved_imports(wasmtime.wat2wasm(wat)) == ["env.secret_host_call", "env.memory"]
    need_toolchain("c")
    source = (b'__attribute__((import_module("env"), import_name("secret_host_call"))) void host(int);\n'
              b'int main(void) { host(1); return 0; }\n')
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("c", source)
    assert info.value.status == 422 and "env.secret_host_call" in info.value.extra["details"]
    fn_dir = tmp_path / "imports"
    fn_dir.mkdir()
    (fn_dir / "code.wasm").write_bytes(wasmtime.wat2wasm(wat))
    hello = make_function(tmp_path, "hello", "c", EXAMPLES / "hello.c")
    results = run_jobs(*[dict(fn_dir=str(fn_dir), lang="c")] * 2, dict(fn_dir=hello, lang="c"))
    for out in results[:2]:
        assert out["error"] == "runtime" and "env.secret_host_call" in out["message"], out
    assert results[2]["stdout"] == b"Hello from FAAS!\n"
