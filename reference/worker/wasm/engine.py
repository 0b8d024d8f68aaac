"""The one wasmtime configuration shared by deploy (precompiling code.cwasm) and the workers.

A precompiled artifact only loads into an engine configured exactly like the one that made it,
so every process builds its engine here.
"""

import logging
import os

import wasmtime
from wasmtime import _bindings as ffi

from reference.wire.errors import FaasError

log = logging.getLogger(__name__)


# The pooling allocator: instances and memories come from slots reserved once per engine
# instead of being mapped and unmapped per call (hello.c in-process: about 300 -> 175 us). A
# worker runs one call at a time, so a few slots are plenty; what is reserved is address space
# only (PROT_NONE), committed as a call's memory grows. The limits are wide enough for Go's
# runtime (large tables and instances); a function's own memory limit is set per Store.
POOL_SLOTS = 8
POOL_MAX_MEMORY = 4 << 30          # a 32-bit linear memory's whole range
POOL_TABLE_ELEMENTS = 1 << 17
POOL_MAX_INSTANCE_SIZE = 16 << 20


def make_engine():
    """A new Engine: no compilation threads (workers are forked, and wasmtime's thread pool is
    known to hang forked children), epoch interruption for timeouts, code optimised for speed,
    the pooling allocator."""
    config = wasmtime.Config()
    config.parallel_compilation = False
    config.epoch_interruption = True
    config.cranelift_opt_level = "speed"
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, POOL_SLOTS)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, POOL_SLOTS)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, POOL_SLOTS)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, POOL_MAX_MEMORY)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, POOL_TABLE_ELEMENTS)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pool, POOL_MAX_INSTANCE_SIZE)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)
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
