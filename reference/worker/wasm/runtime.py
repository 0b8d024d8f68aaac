"""The wasm runtime: C, Rust and Go compiled to WASI, a fresh Store and instance per call."""

import os
import time
from collections import OrderedDict

from reference.wire.jobs import Outcome
from reference.worker.capture import Capture
from reference.worker.capture import ms as _ms
from reference.worker.wasm.deadline import DeadlineWatch

MODULE_CACHE = 64           # compiled modules kept per worker
WASM_PAGE = 64 * 1024


class WasmRuntime:
    """C, Rust and Go compiled to WASI: a fresh Store and instance per call, modules cached per fn_id."""

    def __init__(self, scratch):
        """`scratch` is unused: wasm calls touch no files (every runtime is made with it)."""
        import wasmtime  # here, not at import time: only workers that run wasm need it

        from reference.worker.wasm import engine as wasm
        from reference.worker.wasm import wasi

        self.wasmtime, self.wasm, self.wasi = wasmtime, wasm, wasi
        self.engine = wasm.make_engine()
        self.linker = wasmtime.Linker(self.engine)
        self.host = wasi.Wasi(self.linker)  # the WASI host functions, bound to one call at a time
        self.cache = OrderedDict()      # fn_id -> InstancePre (the linking is done once)
        # Made in the worker, after the fork: threads do not survive a fork.
        self.watch = DeadlineWatch(self.engine)

    def _instance_pre(self, job):
        """The function's linked module, or the message saying why it cannot be linked (cached
        too: a module deployed before deploy checked its imports fails each call the same way,
        without a traceback in the log every time)."""
        pre = self.cache.get(job.fn_id)
        if pre is None:
            module = self.wasm.load_module(self.engine, job.fn_dir)
            missing = self.wasi.unresolved_imports(_module_bytes(job.fn_dir))
            if missing:
                pre = "the module imports what the platform does not provide: %s" % ", ".join(missing[:8])
            else:
                self.host.define_missing(module)
                try:
                    pre = self.linker.instantiate_pre(module)
                except self.wasmtime.WasmtimeError as exc:
                    pre = "the module cannot be linked: %s" % str(exc).splitlines()[0]
            self.cache[job.fn_id] = pre
            if len(self.cache) > MODULE_CACHE:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(job.fn_id)
        return pre

    def run(self, job):
        wasmtime, wasi = self.wasmtime, self.wasi
        started = time.perf_counter()
        pre = self._instance_pre(job)
        if isinstance(pre, str):
            return Outcome(exit_code=1, error="runtime", message=pre)
        stdout, stderr = Capture(job.output_limit), Capture(job.output_limit)
        call = wasi.Call(job.input, stdout, stderr, deadline=time.monotonic() + job.timeout_ms / 1000, env=job.env)
        self.host.begin(call)
        store = wasmtime.Store(self.engine)
        limit = job.memory_mb << 20
        out = Outcome()
        try:
            store.set_limits(memory_size=limit)
            self.watch.begin(store, time.monotonic() + job.timeout_ms / 1000)
            try:
                instance = pre.instantiate(store)
            except wasmtime.WasmtimeError as exc:
                out.error, out.message = _instantiate_error(exc, job)
                return out
            out.init_ms = _ms(started)
            run_started = time.perf_counter()
            try:
                wasi.start(store, instance)
            except wasmtime.Trap as exc:
                if call.exit_code is None:
                    out.exit_code, out.error, out.message = 1, *_trap_error(wasmtime, exc, job)
            except wasmtime.WasmtimeError as exc:
                if call.exit_code is None:
                    out.exit_code, out.error = 1, "runtime"
                    out.message = "the function failed: %s" % str(exc).splitlines()[0]
            if call.exit_code is not None:
                out.exit_code = call.exit_code
            elif call.timed_out:
                out.exit_code, out.error, out.message = 1, "timeout", _timeout_message(job)
            if call.complaints:
                out.extra["wasi"] = call.complaints
            out.exec_ms = _ms(run_started)
            if out.error in (None, "runtime") and (out.exit_code or out.error) and _near_limit(instance, store, limit):
                # A refused memory.grow is not a trap: malloc returns NULL and the program
                # fails its own way. Failing with its memory at the ceiling is the tell.
                out.error = "memory"
                out.message = "the function ran out of its %d MiB of memory" % job.memory_mb
            return out
        finally:
            self.watch.end()
            self.host.begin(None)
            out.stdout, out.stderr = stdout.value(), stderr.value()
            out.truncated = stdout.truncated or stderr.truncated
            store.close()

    def close(self):
        self.watch.close()
        self.cache.clear()


def _module_bytes(fn_dir):
    with open(os.path.join(fn_dir, "code.wasm"), "rb") as f:
        return f.read()


def _timeout_message(job):
    return "the function ran longer than its %d ms limit and was stopped" % job.timeout_ms


def _trap_error(wasmtime, exc, job):
    if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
        return "timeout", _timeout_message(job)
    what = exc.trap_code.name.lower().replace("_", " ") if exc.trap_code else exc.message.splitlines()[0]
    return "runtime", "the function trapped: %s" % what


def _instantiate_error(exc, job):
    text = str(exc).splitlines()[0]
    if "memory" in text and ("limit" in text or "minimum" in text or "exceeds" in text):
        return "memory", "the module needs more memory than its %d MiB limit: %s" % (job.memory_mb, text)
    return "runtime", "the module could not start: %s" % text


def _near_limit(instance, store, limit):
    memory = instance.exports(store).get("memory")
    if memory is None:
        return False
    used = memory.data_len(store)
    # Allocators grow by the block they need: within 1/8 of the ceiling (or a few pages) counts.
    return used + max(limit // 8, 4 * WASM_PAGE) >= limit
