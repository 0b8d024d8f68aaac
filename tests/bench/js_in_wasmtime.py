"""Issue 20's untried option for JavaScript: a JS engine in wasmtime, a fresh instance per call.

A registry ships one: npm's `quickjs-wasi` (QuickJS-NG built as a WASI reactor, MIT, by
vercel-labs). This script measures what a fresh JavaScript call would cost that way, with the
workers' own engine (reference/worker/wasm/engine.py), next to what a fresh node costs today:

    npm pack quickjs-wasi@3.7.0 && tar xzf quickjs-wasi-3.7.0.tgz
    python tests/bench/js_in_wasmtime.py package/quickjs.wasm 3

It prints one JSON object: CPU microseconds per call, with the workers' engine (the pooling
allocator, epoch interruption) and with wasmtime's defaults, for
- "source": a new Store and instance, the reactor's _initialize, a QuickJS runtime and context
  (qjs_init), the input set as a global and examples/add.js's arithmetic evaluated from source;
- "bytecode": the same, the code compiled once to QuickJS bytecode beforehand;
- "from a snapshot after qjs_init": a new instance whose memory is written with an image taken
  right after qjs_init (quickjs-wasi's restore), then the source evaluated: no _initialize and
  no qjs_init per call, and still nothing of one call in the next;
- "node": a fresh `node -e` running the same arithmetic (the children's CPU), with PATH alone in
  its environment as a function has, which is what a fresh call of a JavaScript function costs
  the platform now (before the sandbox's own cost).

It is a measurement, not a runtime: the platform does not run JavaScript this way (DESIGN.md
has JavaScript run under node, with node's APIs; QuickJS has neither `process` nor `require`).
Nothing in it is a function's contract; docs/PERFORMANCE.md ("A fifth look") has the figures.
"""

import ctypes
import json
import os
import resource
import subprocess
import sys
import time

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern
from rusage import cpu_seconds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from reference.worker.wasm.engine import make_engine  # noqa: E402

CODE = b"const input = JSON.parse(INPUT); JSON.stringify({sum: input.a + input.b})"
INPUT = b'{"a": 2, "b": 3}'
EXPECTED = '{"sum":5}'
NODE = "const input = JSON.parse(process.argv[1]); process.stdout.write(JSON.stringify({sum: input.a + input.b}))"
NAMES = ("_initialize", "qjs_init", "memory", "wasm_malloc", "qjs_new_string", "qjs_set_prop_string",
         "qjs_get_global", "qjs_eval", "qjs_eval_bytecode", "qjs_compile", "qjs_is_exception",
         "qjs_get_string_len", "qjs_get_runtime_ptr", "qjs_get_context_ptr", "qjs_set_runtime_and_context",
         "__stack_pointer")
# The reactor's own imports (timers, modules, host calls): none is used by the code above.
HOST_IMPORTS = {"host_get_timezone_offset": (2, 1), "host_interrupt": (0, 1), "host_promise_rejection": (3, 0),
                "host_module_normalize": (2, 1), "host_module_load": (2, 1), "host_call": (5, 1)}


# wasmtime's defaults: memories mapped per instance (copy-on-write from the module's image), no
# epoch interruption; the workers' engine (make_engine) pools instances and interrupts at an epoch.
_PLAIN = wasmtime.Engine()


def export(store, instance, name):
    """One export by name: Instance.exports wraps every one of the module's 454 exports, about
    7 ms a call, which would be most of what is measured."""
    item = ffi.wasmtime_extern_t()
    raw = name.encode()
    if not ffi.wasmtime_instance_export_get(store._context(), ctypes.byref(instance._instance),
                                            ctypes.create_string_buffer(raw), len(raw), ctypes.byref(item)):
        raise KeyError(name)
    return wrap_extern(item)


class Fresh:
    """A fresh QuickJS per call, from one linked module."""

    def __init__(self, wasm_path, engine):
        self.engine = engine
        module = wasmtime.Module.from_file(self.engine, wasm_path)
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        for name, (params, results) in HOST_IMPORTS.items():
            linker.define_func("env", name, wasmtime.FuncType([i32] * params, [i32] * results),
                               (lambda *args: 0) if results else (lambda *args: None))
        self.pre = linker.instantiate_pre(module)
        self.bytecode = None
        self.interrupts = engine is not None and engine is not _PLAIN

    def _vm(self, restore=False):
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasmtime.WasiConfig())
        if self.interrupts:
            store.set_epoch_deadline(1 << 20)  # the workers' engine interrupts at its epoch deadline
        instance = self.pre.instantiate(store)
        ex = {name: export(store, instance, name) for name in NAMES}
        if restore:
            # quickjs-wasi's own restore: the memory as it was after qjs_init, the runtime and
            # context pointers into it, and the stack pointer; no _initialize, no qjs_init.
            memory, pages = ex["memory"], len(self.image) // 65536
            if memory.size(store) < pages:
                memory.grow(store, pages - memory.size(store))
            memory.write(store, self.image, 0)
            ex["qjs_set_runtime_and_context"](store, *self.pointers)
            ex["__stack_pointer"].set_value(store, self.stack_pointer)
            return store, ex
        ex["_initialize"](store)
        if ex["qjs_init"](store) != 0:
            raise RuntimeError("qjs_init failed")
        return store, ex

    def snapshot(self):
        """The memory, pointers and stack pointer of a VM right after qjs_init."""
        store, ex = self._vm()
        memory = ex["memory"]
        self.image = memory.read(store, 0, memory.data_len(store))
        self.pointers = ex["qjs_get_runtime_ptr"](store), ex["qjs_get_context_ptr"](store)
        self.stack_pointer = ex["__stack_pointer"].value(store)

    @staticmethod
    def _put(store, ex, data):
        ptr = ex["wasm_malloc"](store, len(data) + 1)
        ex["memory"].write(store, data + b"\0", ptr)
        return ptr

    def compile(self):
        store, ex = self._vm()
        size_at = ex["wasm_malloc"](store, 4)
        at = ex["qjs_compile"](store, self._put(store, ex, CODE), len(CODE), self._put(store, ex, b"<fn>"), 0, 0,
                               size_at)
        if at == 0:
            raise RuntimeError("qjs_compile failed")
        size = int.from_bytes(ex["memory"].read(store, size_at, size_at + 4), "little")
        self.bytecode = ex["memory"].read(store, at, at + size)

    def call(self, bytecode=False, restore=False):
        store, ex = self._vm(restore)
        text = ex["qjs_new_string"](store, self._put(store, ex, INPUT), len(INPUT))
        ex["qjs_set_prop_string"](store, ex["qjs_get_global"](store), self._put(store, ex, b"INPUT"), text)
        if bytecode:
            value = ex["qjs_eval_bytecode"](store, self._put(store, ex, self.bytecode), len(self.bytecode))
        else:
            value = ex["qjs_eval"](store, self._put(store, ex, CODE), len(CODE), self._put(store, ex, b"<fn>"), 0)
        if ex["qjs_is_exception"](store, value):
            raise RuntimeError("the code threw")
        size_at = ex["wasm_malloc"](store, 4)
        at = ex["qjs_get_string_len"](store, value, size_at)
        size = int.from_bytes(ex["memory"].read(store, size_at, size_at + 4), "little")
        return ex["memory"].read(store, at, at + size).decode()


def cpu(who=resource.RUSAGE_SELF):
    return cpu_seconds(who)


def per_call(fn, seconds):
    """CPU microseconds per call of fn over about `seconds`, after one call checked."""
    fn()
    calls, started, before = 0, time.perf_counter(), cpu()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return round((cpu() - before) / calls * 1e6, 1), calls


def node_per_start(starts=15):
    """CPU per fresh node, in the environment a function gets (PATH only): an inherited
    NODE_EXTRA_CA_CERTS, as some shells here set, makes node read a CA bundle at every start,
    about 40 ms more."""
    before = cpu(resource.RUSAGE_CHILDREN)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for _ in range(starts):
        out = subprocess.run(["node", "-e", NODE, INPUT.decode()], capture_output=True, text=True, check=True,
                             env=env).stdout
        if out != EXPECTED:
            raise SystemExit("node printed %r" % out)
    return round((cpu(resource.RUSAGE_CHILDREN) - before) / starts * 1e6, 1)


def main(wasm_path, seconds):
    engines = {"workers' engine": make_engine(), "default engine": _PLAIN}
    runs = {}
    for label, engine in engines.items():
        fresh = runs[label] = Fresh(wasm_path, engine)
        fresh.compile()
        fresh.snapshot()
        for bytecode, restore in ((False, False), (True, False), (False, True)):
            if fresh.call(bytecode, restore) != EXPECTED:
                raise SystemExit("unexpected output %r" % fresh.call(bytecode, restore))
    figures = {}
    for round_ in range(2):     # alternated, twice
        for label, fresh in runs.items():
            for name, fn in (("source", fresh.call), ("bytecode", lambda fresh=fresh: fresh.call(True)),
                             ("from a snapshot after qjs_init", lambda fresh=fresh: fresh.call(restore=True))):
                us, calls = per_call(fn, seconds / 8)
                figures.setdefault("%s, %s" % (name, label), []).append(us)
    figures["node"] = [node_per_start()]
    print(json.dumps({"cpu_us_per_call": figures, "bytecode_bytes": len(fresh.bytecode)}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
