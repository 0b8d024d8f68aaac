"""Issue 6's yardstick, run as its own process: one thread calling a WASI module with wasmtime's
ordinary API (fresh Store and instance per call, stdin from a file, stdout to a file).

    python wasm_baseline.py MODULE.wasm SECONDS [pre]  ->  prints {"calls", "seconds", "calls_per_s"}

With "pre", the module is linked once (an InstancePre, as the worker caches it) and each call
only instantiates it in a fresh Store: issue 20's in-process ceiling.

A process of its own because wasmtime must not run WASI code in a process that forks later.
"""

import json
import os
import sys
import tempfile
import time

import wasmtime


def main(wasm_path, seconds, pre=False):
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, wasm_path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linked = linker.instantiate_pre(module) if pre else None
    scratch = tempfile.mkdtemp(prefix="wasm-baseline-")
    stdin_path, stdout_path = os.path.join(scratch, "stdin"), os.path.join(scratch, "stdout")
    with open(stdin_path, "wb") as f:
        f.write(b"test data")

    def call():
        store = wasmtime.Store(engine)
        config = wasmtime.WasiConfig()
        config.argv = ["function"]
        config.stdin_file = stdin_path
        config.stdout_file = stdout_path
        store.set_wasi(config)
        instance = linked.instantiate(store) if linked is not None else linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            assert exc.code == 0, exc

    call()
    with open(stdout_path, "rb") as f:
        output = f.read()
    if not output.startswith(b"Hello from FAAS!"):
        raise SystemExit("unexpected output from the module: %r" % output[:200])
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        calls += 1
    elapsed = time.perf_counter() - started
    for path in (stdin_path, stdout_path):
        os.unlink(path)
    os.rmdir(scratch)
    print(json.dumps({"calls": calls, "seconds": elapsed, "calls_per_s": calls / elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), pre=sys.argv[3:4] == ["pre"])
