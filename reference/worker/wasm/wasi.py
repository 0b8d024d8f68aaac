"""The WASI preview 1 that functions see, written here instead of wasmtime's: the part a command
uses with no files, over wasmtime's raw ("unchecked") host functions.

Why not `Linker.define_wasi()`: through wasmtime-py, its host calls and the per-Store WASI
context cost about 0.7 ms for hello.c; these cost about 0.1 ms (docs/PERFORMANCE.md). What a
function sees is what the worker gave it before, through wasmtime's WASI:

- argv is ["function"]; the environment is the function's env and secrets (the Job's `env`),
  empty for most functions;
- fd 0 reads the invocation's input, fds 1 and 2 write into the worker's captures;
- clocks, random bytes, sched_yield, and poll_oneoff (sleeps end by the call's deadline);
- no files and no sockets: there is no preopened directory, so every path call and every other
  descriptor answers EBADF; the calls not written here answer ENOSYS;
- proc_exit ends the call with its code.

One `Wasi` per Linker; `begin()` binds it to one call at a time (a worker runs one call at a time,
and the module keeps two scratch structs for the C calls on that assumption).

No host call may cost more than the call is allowed: every pointer and length is checked
against the memory before anything is allocated or copied, an iovec list is at most IOV_MAX
long (a negative or larger count is EINVAL), fd_write copies at most what still fits in the
output limit (the rest is counted as written and dropped, as a full capture does), long host
calls look at the deadline, and a fault part-way through fd_read keeps the input not delivered.
`unresolved_imports` lets deploy refuse a module whose imports no worker could satisfy.
"""

import ctypes
import os
import struct
import time

import wasmtime
from wasmtime import _bindings as ffi

MODULE = "wasi_snapshot_preview1"
ARGV = b"function\0"

ESUCCESS, EBADF, EFAULT, EINVAL, ENOSYS, ESPIPE = 0, 8, 21, 28, 52, 70
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS, CLOCK_THREAD = 0, 1, 2, 3
EVENT_CLOCK, EVENT_FD_READ, EVENT_FD_WRITE = 0, 1, 2
FILETYPE_UNKNOWN = 0                   # what a pipe is to WASI; not a tty, so stdio is fully buffered
RIGHT_FD_READ, RIGHT_FD_WRITE, RIGHT_POLL = 1 << 1, 1 << 6, 1 << 27
SUBSCRIPTION, EVENT = 48, 32           # sizes in bytes, from the preview 1 ABI
U32 = 0xFFFFFFFF
IOV_MAX = 1024                         # as Linux's writev: more iovecs in one call is EINVAL
RANDOM_CHUNK = 1 << 16                 # random_get fills memory this much at a time
DEADLINE_EVERY = 64                    # iovecs (or random chunks) between looks at the clock

_CALLBACK = ffi.wasmtime_func_unchecked_callback_t
_memory_extern = ffi.wasmtime_extern_t()
_EXTERN_FUNC, _EXTERN_MEMORY = 0, 3    # WASMTIME_EXTERN_FUNC and _MEMORY in wasmtime.h
_start_extern = ffi.wasmtime_extern_t()
_NO_FINALIZER = ffi._wasmtime_linker_define_func_unchecked.argtypes[-1]()   # a NULL function pointer


class Fault(Exception):
    """A pointer from the guest falls outside its memory: the call answers EFAULT."""


class _Deadline(Exception):
    """A sleep reached the call's deadline: the call ends as timed out, as a busy loop would."""


class _Exit(Exception):
    def __init__(self, code):
        self.code = code


class Call:
    """What one invocation's WASI reads and writes: its input and two sinks with a `write`
    (and, for the output limit, a `limit` and `size`, as reference.worker.capture.Capture)."""

    def __init__(self, stdin, stdout, stderr, deadline, env=None):
        self.stdin, self.pos = stdin, 0
        # environ_get's strings, "NAME=value\0" each (checked at deploy: no NUL in a value).
        self.environ = [("%s=%s" % item).encode("utf-8") + b"\0" for item in (env or {}).items()]
        self.sinks = {1: stdout, 2: stderr}
        self.closed = set()
        self.deadline = deadline       # time.monotonic() past which sleeps stop early
        self.exit_code = None          # set by proc_exit
        self.timed_out = False         # set when a sleep or a long host call reached the deadline
        self.complaints = []           # what the module did wrong that it may not know (EINVAL's why)

    def complain(self, text):
        if len(self.complaints) < 8:
            self.complaints.append(text)

    def check_deadline(self):
        if time.monotonic() >= self.deadline:
            raise _Deadline()


class Memory:
    """The caller's linear memory for the length of one host call, every access bounds-checked."""

    __slots__ = ("base", "size")

    def __init__(self, caller):
        if not ffi.wasmtime_caller_export_get(caller, b"memory", 6, ctypes.byref(_memory_extern)) \
                or _memory_extern.kind != _EXTERN_MEMORY:
            raise Fault("the module exports no memory")
        context = ffi.wasmtime_caller_context(caller)
        memory = ctypes.byref(_memory_extern.of.memory)
        self.base = ctypes.addressof(ffi.wasmtime_memory_data(context, memory).contents)
        self.size = ffi.wasmtime_memory_data_size(context, memory)

    def _at(self, ptr, length):
        ptr &= U32
        if length < 0 or ptr + length > self.size:
            raise Fault(ptr)
        return self.base + ptr

    def check(self, ptr, length):
        """Raise Fault unless [ptr, ptr + length) lies inside the memory."""
        self._at(ptr, length)

    def read(self, ptr, length):
        return ctypes.string_at(self._at(ptr, length), length) if length else b""

    def write(self, ptr, data):
        if data:
            ctypes.memmove(self._at(ptr, len(data)), data, len(data))

    def u32s(self, ptr, count):
        return struct.unpack("<%dI" % count, self.read(ptr, 4 * count))

    def put(self, ptr, fmt, *values):
        self.write(ptr, struct.pack(fmt, *values))


class Wasi:
    """Defines the preview 1 functions on a Linker; `begin(call)` before each instantiation."""

    def __init__(self, linker):
        self.linker, self.call = linker, None
        self._keep = []                # the ctypes callbacks must outlive the linker
        self._defined = set()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        signatures = {
            "args_get": [i32, i32], "args_sizes_get": [i32, i32],
            "environ_get": [i32, i32], "environ_sizes_get": [i32, i32],
            "fd_read": [i32] * 4, "fd_write": [i32] * 4, "fd_close": [i32],
            "fd_seek": [i32, i64, i32, i32], "fd_fdstat_get": [i32, i32],
            "fd_fdstat_set_flags": [i32, i32], "fd_prestat_get": [i32, i32],
            "fd_prestat_dir_name": [i32, i32, i32],
            "clock_time_get": [i32, i64, i32], "clock_res_get": [i32, i32],
            "random_get": [i32, i32], "sched_yield": [], "poll_oneoff": [i32] * 4,
        }
        for name, params in signatures.items():
            self._define(name, wasmtime.FuncType(params, [i32]), getattr(self, name))
        self._define("proc_exit", wasmtime.FuncType([i32], []), self.proc_exit)

    def begin(self, call):
        self.call = call

    def define_missing(self, module):
        """Answer the preview 1 imports written nowhere here: EBADF for descriptor and path calls
        (there are no files to name), ENOSYS for the rest. The Linker must define every import."""
        for imp in module.imports:
            if imp.module != MODULE or imp.name in self._defined or not isinstance(imp.type, wasmtime.FuncType):
                continue
            errno = EBADF if imp.name.startswith(("fd_", "path_")) else ENOSYS
            results = imp.type.results
            self._define(imp.name, imp.type, lambda *args, errno=errno, results=results: errno if results else None)

    def _define(self, name, functype, impl):
        nresults = len(functype.results)

        def callback(env, caller, values, count):
            try:
                params = [values[i].i64 if kind == "i64" else values[i].i32 for i, kind in enumerate(kinds)]
                result = impl(caller, *params)
            except Fault:
                result = EFAULT
            except _Exit as exit:
                self.call.exit_code = exit.code
                return _trap("exit %d" % exit.code)
            except _Deadline:
                self.call.timed_out = True
                return _trap("the call's deadline passed in %s" % name)
            except BaseException as exc:  # noqa: BLE001 - nothing may cross back into wasmtime
                return _trap("the platform's WASI failed in %s: %r" % (name, exc))
            if nresults:
                values[0].i32 = result
            return 0

        kinds = [str(t) for t in functype.params]
        cb = _CALLBACK(callback)
        self._keep.append(cb)
        module, field = MODULE.encode(), name.encode()
        error = ffi.wasmtime_linker_define_func_unchecked(
            self.linker.ptr(), module, len(module), field, len(field), functype.ptr(), cb, None, _NO_FINALIZER)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        self._defined.add(name)

    # --- arguments and environment ------------------------------------------------------------

    def args_sizes_get(self, caller, argc, size):
        memory = Memory(caller)
        memory.put(argc, "<I", 1)
        memory.put(size, "<I", len(ARGV))
        return ESUCCESS

    def args_get(self, caller, argv, buf):
        memory = Memory(caller)
        memory.write(buf, ARGV)
        memory.put(argv, "<I", buf & U32)
        return ESUCCESS

    def environ_sizes_get(self, caller, count, size):
        memory = Memory(caller)
        memory.put(count, "<I", len(self.call.environ))
        memory.put(size, "<I", sum(len(entry) for entry in self.call.environ))
        return ESUCCESS

    def environ_get(self, caller, environ, buf):
        """The pointers at `environ`, the strings they point at from `buf`: the sizes the
        module was told (every range checked before anything is written)."""
        entries = self.call.environ
        if not entries:
            return ESUCCESS
        memory = Memory(caller)
        memory.check(environ, 4 * len(entries))
        memory.check(buf, sum(len(entry) for entry in entries))
        pointers, at = [], buf & U32
        for entry in entries:
            pointers.append(at)
            memory.write(at, entry)
            at += len(entry)
        memory.put(environ, "<%dI" % len(pointers), *pointers)
        return ESUCCESS

    # --- descriptors: 0 is the input, 1 and 2 the captures ---------------------------------------

    def _iovecs(self, memory, name, iovs, count):
        """The (pointer, length) pairs of an iovec list, or an errno when the count is wrong."""
        if not 0 <= count <= IOV_MAX:
            self.call.complain("%s: an iovec count of %d is out of range (0 to %d)" % (name, count, IOV_MAX))
            return None
        vector = memory.u32s(iovs, 2 * count)
        return [(vector[i], vector[i + 1]) for i in range(0, 2 * count, 2)]

    def fd_write(self, caller, fd, iovs, count, written):
        call = self.call
        sink = call.sinks.get(fd)
        if sink is None or fd in call.closed:
            return EBADF
        memory, total = Memory(caller), 0
        memory.check(written, 4)
        vector = self._iovecs(memory, "fd_write", iovs, count)
        if vector is None:
            return EINVAL
        for i, (ptr, length) in enumerate(vector):
            memory.check(ptr, length)
            # Only what still fits in the output is copied; the rest is dropped unread, as a
            # full capture would drop it, so one call costs at most the output limit.
            room = getattr(sink, "limit", length) - getattr(sink, "size", 0)
            if room > 0:
                sink.write(memory.read(ptr, min(length, room)))
            if length > room:
                sink.write(b"x")        # marks the capture as cut
            total += length
            if i % DEADLINE_EVERY == DEADLINE_EVERY - 1:
                call.check_deadline()
        memory.put(written, "<I", total & U32)
        return ESUCCESS

    def fd_read(self, caller, fd, iovs, count, read):
        call = self.call
        if fd != 0 or fd in call.closed:
            return EBADF
        memory, total = Memory(caller), 0
        memory.check(read, 4)           # before any input is taken: none can be lost to it
        vector = self._iovecs(memory, "fd_read", iovs, count)
        if vector is None:
            return EINVAL
        for ptr, length in vector:
            chunk = call.stdin[call.pos:call.pos + length]
            try:
                memory.write(ptr, chunk)
            except Fault:
                if total == 0:
                    raise
                break                   # a short read of what was delivered; the rest stays unread
            call.pos += len(chunk)
            total += len(chunk)
            if len(chunk) < length:
                break
        memory.put(read, "<I", total)
        return ESUCCESS

    def fd_close(self, caller, fd):
        if not 0 <= fd <= 2 or fd in self.call.closed:
            return EBADF
        self.call.closed.add(fd)
        return ESUCCESS

    def fd_seek(self, caller, fd, offset, whence, position):
        return ESPIPE if 0 <= fd <= 2 and fd not in self.call.closed else EBADF

    def fd_fdstat_get(self, caller, fd, stat):
        if not 0 <= fd <= 2 or fd in self.call.closed:
            return EBADF
        rights = (RIGHT_FD_READ if fd == 0 else RIGHT_FD_WRITE) | RIGHT_POLL
        Memory(caller).put(stat, "<BxHxxxxQQ", FILETYPE_UNKNOWN, 0, rights, 0)
        return ESUCCESS

    def fd_fdstat_set_flags(self, caller, fd, flags):
        return ESUCCESS if 0 <= fd <= 2 and fd not in self.call.closed else EBADF

    def fd_prestat_get(self, caller, fd, prestat):
        return EBADF                   # no preopened directory: the end of the list

    def fd_prestat_dir_name(self, caller, fd, path, length):
        return EBADF

    # --- time, randomness, process --------------------------------------------------------------

    def clock_time_get(self, caller, clock, precision, result):
        now = _now(clock)
        if now is None:
            return EINVAL
        Memory(caller).put(result, "<Q", now)
        return ESUCCESS

    def clock_res_get(self, caller, clock, result):
        if _now(clock) is None:
            return EINVAL
        Memory(caller).put(result, "<Q", 1000)
        return ESUCCESS

    def random_get(self, caller, buf, length):
        memory, length = Memory(caller), length & U32
        memory.check(buf, length)       # before a single byte is made
        for i, offset in enumerate(range(0, length, RANDOM_CHUNK)):
            memory.write(buf + offset, os.urandom(min(RANDOM_CHUNK, length - offset)))
            if i % DEADLINE_EVERY == DEADLINE_EVERY - 1:
                self.call.check_deadline()
        return ESUCCESS

    def sched_yield(self, caller):
        return ESUCCESS

    def poll_oneoff(self, caller, subscriptions, events, count, stored):
        """Descriptor subscriptions are ready at once (the input is all there, the captures never
        block); clock ones sleep until the earliest; a sleep past the call's deadline ends the call there."""
        memory, call = Memory(caller), self.call
        count &= U32
        if count == 0:
            return EINVAL
        raw = memory.read(subscriptions, SUBSCRIPTION * count)
        ready, wake = [], None
        for i in range(count):
            userdata, tag = struct.unpack_from("<QB", raw, SUBSCRIPTION * i)
            if tag == EVENT_CLOCK:
                clock, timeout, _precision, flags = struct.unpack_from("<IxxxxQQH", raw, SUBSCRIPTION * i + 16)
                now = _now(clock)
                if now is None:
                    ready.append((userdata, EINVAL, tag, 0))
                    continue
                delay = max(timeout - now, 0) if flags & 1 else timeout
                if wake is None or delay < wake[0]:
                    wake = (delay, userdata)
            elif tag in (EVENT_FD_READ, EVENT_FD_WRITE):
                (fd,) = struct.unpack_from("<I", raw, SUBSCRIPTION * i + 16)
                ok = fd not in call.closed and (fd == 0 if tag == EVENT_FD_READ else fd in call.sinks)
                waiting = len(call.stdin) - call.pos if fd == 0 else 0
                ready.append((userdata, ESUCCESS if ok else EBADF, tag, waiting))
            else:
                return EINVAL
        if not ready and wake is not None:
            left = call.deadline - time.monotonic()
            if wake[0] / 1e9 >= left:
                time.sleep(max(left, 0.0))
                raise _Deadline()
            time.sleep(wake[0] / 1e9)
            ready.append((wake[1], ESUCCESS, EVENT_CLOCK, 0))
        for i, (userdata, error, tag, waiting) in enumerate(ready):
            memory.put(events + EVENT * i, "<QHBxxxxxQHxxxxxx", userdata, error, tag, waiting, 0)
        memory.put(stored, "<I", len(ready))
        return ESUCCESS

    def proc_exit(self, caller, code):
        raise _Exit(code & U32)


def unresolved_imports(wasm):
    """The imports of a module (bytes) no worker provides, as "module.name": anything but a
    function of wasi_snapshot_preview1. Raises ValueError when the bytes are not a module."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("not a WebAssembly module")
    pos, missing = 8, []
    while pos < len(wasm):
        section, pos = wasm[pos], pos + 1
        size, pos = _leb(wasm, pos)
        if section != 2:
            pos += size
            continue
        count, pos = _leb(wasm, pos)
        for _ in range(count):
            module, pos = _name(wasm, pos)
            field, pos = _name(wasm, pos)
            kind, pos = wasm[pos], pos + 1
            if kind == 0:                       # function: a type index
                _, pos = _leb(wasm, pos)
            elif kind == 1:                     # table: a reference type, then limits
                pos = _limits(wasm, pos + 1)
            elif kind == 2:                     # memory: limits
                pos = _limits(wasm, pos)
            elif kind == 3:                     # global: a value type and mutability
                pos += 2
            elif kind == 4:                     # tag: an attribute and a type index
                _, pos = _leb(wasm, pos + 1)
            else:
                raise ValueError("unknown import kind %d" % kind)
            if module != MODULE or kind != 0:
                missing.append("%s.%s" % (module, field))
        break
    return missing


def _leb(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated module")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _name(data, pos):
    length, pos = _leb(data, pos)
    return data[pos:pos + length].decode(errors="replace"), pos + length


def _limits(data, pos):
    flags, pos = data[pos], pos + 1
    _, pos = _leb(data, pos)
    if flags & 1:
        _, pos = _leb(data, pos)
    return pos


def start(store, instance):
    """Run the command's `_start`: what `instance.exports(store)["_start"](store)` does, without
    building every export's Python object and checking types first (about 50 us a call).
    Raises wasmtime.Trap or wasmtime.WasmtimeError as that would."""
    context = store._context()
    if not ffi.wasmtime_instance_export_get(context, ctypes.byref(instance._instance), b"_start", 6,
                                            ctypes.byref(_start_extern)) or _start_extern.kind != _EXTERN_FUNC:
        raise wasmtime.WasmtimeError("the module is not a WASI command: it exports no _start function")
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call(context, ctypes.byref(_start_extern.of.func), None, 0, None, 0, ctypes.byref(trap))
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


def _now(clock):
    if clock == CLOCK_REALTIME:
        return time.time_ns()
    if clock == CLOCK_MONOTONIC:
        return time.monotonic_ns()
    if clock in (CLOCK_PROCESS, CLOCK_THREAD):
        return time.process_time_ns()
    return None


def _trap(message):
    data = message.encode()
    return ctypes.cast(ffi.wasmtime_trap_new(data, len(data)), ctypes.c_void_p).value
