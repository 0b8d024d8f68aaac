"""The one wasmtime configuration shared by deploy (precompiling code.cwasm) and the workers.

A precompiled artifact only loads into an engine configured exactly like the one that made it,
so every process builds its engine here.
"""

import logging
import os

import wasmtime

from reference.errors import FaasError

log = logging.getLogger(__name__)


def make_engine():
    """A new Engine: no compilation threads (workers are forked, and wasmtime's thread pool is
    known to hang forked children), epoch interruption for timeouts, code optimised for speed."""
    config = wasmtime.Config()
    config.parallel_compilation = False
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    return wasmtime.Engine(config)


_deploy_engine = None


def precompile(wasm):
    """The serialized native artifact of a module (stored as code.cwasm beside code.wasm).
    Raises FaasError when the bytes are not a valid WebAssembly module."""
    global _deploy_engine
    if _deploy_engine is None:
        _deploy_engine = make_engine()
    try:
        return wasmtime.Module(_deploy_engine, wasm).serialize()
    except wasmtime.WasmtimeError as exc:
        raise FaasError("the compiled module is not valid WebAssembly: %s" % exc) from None


def load_module(engine, fn_dir):
    """The function's Module: code.cwasm when it is there and fits this engine (fast), else
    compiled from code.wasm (an artifact from another wasmtime version is refused, not trusted)."""
    cwasm = os.path.join(fn_dir, "code.cwasm")
    if os.path.exists(cwasm):
        try:
            return wasmtime.Module.deserialize_file(engine, cwasm)
        except wasmtime.WasmtimeError as exc:
            log.warning("%s does not fit this engine (%s); compiling code.wasm instead", cwasm, exc)
    with open(os.path.join(fn_dir, "code.wasm"), "rb") as f:
        return wasmtime.Module(engine, f.read())
