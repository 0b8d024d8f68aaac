"""The in-process yardsticks for a C function's rate through the stack, each run as its own
process: one thread calling the same WASI module in a loop, nothing of the platform around it.

    python wasm_baseline.py MODULE.wasm SECONDS [pre]  ->  prints {"calls", "seconds", "calls_per_s"}

Without "pre": issue 6's yardstick, wasmtime's ordinary API (a default Engine, `define_wasi`,
a fresh Store and instance per call, stdin from a file, stdout to a file).

With "pre": issue 20's ceiling, the call as a worker makes it and nothing else: the worker's
Engine (reference.worker.wasm.engine: the pooling allocator, epoch interruption), the module
precompiled as deploy stores it, linked once to the worker's own WASI (an InstancePre, as the
worker caches it), and per call a fresh Store with the memory limit and a deadline, an
instance, `_start`, the output into memory. Not in it: the Job, the Outcome, the deadline
thread, the worker's pipes, and everything before the worker.

Until 2026-12-06 (late) "pre" was wasmtime's InstancePre with wasmtime's WASI on files: about 430 us
a call, 250 of them opening and dropping the WASI files, against the worker's 95 us call, so
issue 20's (c) was measured against a ceiling a quarter of the real one (docs/PERFORMANCE.md,
"A tenth look").

A process of its own because wasmtime must not run WASI code in a process that forks later.
"""

import json
import os
import sys
import tempfile
import time

import wasmtime

INPUT = b"test data"
MEMORY_LIMIT = 128 << 20       # a function's default memory_mb
DEADLINE_EPOCHS = 1 << 40      # no epoch tick runs here: a deadline that never comes


def ordinary(wasm_path):
    """A call with wasmtime's ordinary API, and a function reading its output."""
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, wasm_path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    scratch = tempfile.mkdtemp(prefix="wasm-baseline-")
    stdin_path, stdout_path = os.path.join(scratch, "stdin"), os.path.join(scratch, "stdout")
    with open(stdin_path, "wb") as f:
        f.write(INPUT)

    def call():
        store = wasmtime.Store(engine)
        config = wasmtime.WasiConfig()
        config.argv = ["function"]
        config.stdin_file = stdin_path
        config.stdout_file = stdout_path
        store.set_wasi(config)
        instance = linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            assert exc.code == 0, exc

    def output():
        with open(stdout_path, "rb") as f:
            data = f.read()
        for path in (stdin_path, stdout_path):
            os.unlink(path)
        os.rmdir(scratch)
        return data

    return call, output


def worker_call(wasm_path):
    """A call as the worker makes it (reference.worker.wasm.runtime.WasmRuntime.run without its
    bookkeeping), and a function returning the last call's output."""
    from reference.worker.capture import Capture
    from reference.worker.wasm import engine as worker_engine
    from reference.worker.wasm import wasi

    engine = worker_engine.make_engine()
    with open(wasm_path, "rb") as f:
        module = wasmtime.Module.deserialize(engine, worker_engine.precompile(f.read()))
    linker = wasmtime.Linker(engine)
    host = wasi.Wasi(linker)
    host.define_missing(module)
    pre = linker.instantiate_pre(module)
    last = {}

    def call():
        stdout, stderr = Capture(1 << 20), Capture(1 << 20)
        host.begin(wasi.Call(INPUT, stdout, stderr, deadline=time.monotonic() + 10))
        store = wasmtime.Store(engine)
        try:
            store.set_limits(memory_size=MEMORY_LIMIT)
            store.set_epoch_deadline(DEADLINE_EPOCHS)
            wasi.start(store, pre.instantiate(store))
        finally:
            host.begin(None)
            store.close()
        last["stdout"] = stdout

    return call, lambda: last["stdout"].value()


def main(wasm_path, seconds, pre=False):
    call, output = (worker_call if pre else ordinary)(wasm_path)
    call()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        calls += 1
    elapsed = time.perf_counter() - started
    data = output()
    if not data.startswith(b"Hello from FAAS!") or INPUT not in data:
        raise SystemExit("unexpected output from the module: %r" % data[:200])
    print(json.dumps({"calls": calls, "seconds": elapsed, "calls_per_s": calls / elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), pre=sys.argv[3:4] == ["pre"])
