"""Running one Job inside a worker: WASI modules in wasmtime, scripts under node, python3 or php
in a locked-down child process, and static HTML. `WorkerRuntimes` is made after the fork."""

import contextlib
import ctypes
import logging
import math
import os
import pwd
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict

from reference import toolchains
from reference.jobs import Outcome
from reference.languages import LANGUAGES

log = logging.getLogger(__name__)

WATCH_PERIOD_S = 0.05       # how often the deadline watch looks while calls run
WATCH_PARK_S = 1.0          # idle this long, the watch sleeps until the next call
MODULE_CACHE = 64           # compiled modules kept per worker
WASM_PAGE = 64 * 1024
KILL_GRACE_S = 1.0          # how long to drain pipes after the function's processes are killed
PR_SET_CHILD_SUBREAPER = 36
# What the dynamic loader says when the address-space limit is too small to even start.
LOADER_MEMORY_WORDS = (b"failed to map segment", b"Cannot allocate memory")


class Capture:
    """A byte sink that keeps at most `limit` bytes and remembers whether it dropped any."""

    def __init__(self, limit):
        self.limit, self.chunks, self.size, self.truncated = limit, [], 0, False

    def write(self, data):
        room = self.limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        if data:
            self.chunks.append(bytes(data))
            self.size += len(data)

    def value(self):
        return b"".join(self.chunks)


def _ms(since):
    return (time.perf_counter() - since) * 1000


PIPE_INPUT_MAX = 65536      # a Linux pipe's buffer: this much goes in without a reader


@contextlib.contextmanager
def input_fd(data):
    """A readable descriptor holding `data` for a call's stdin: a pipe when the input fits in
    the pipe's buffer (no file to create, about 0.15 ms less a call), else an unlinked file."""
    if len(data) <= PIPE_INPUT_MAX:
        r, w = os.pipe()
        try:
            os.write(w, data)      # fits in the empty pipe: never blocks, never short
        finally:
            os.close(w)            # the reader sees end of file after the input
        try:
            yield r
        finally:
            os.close(r)
    else:
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            yield f.fileno()


# --- WebAssembly -----------------------------------------------------------------------------

class WasmRuntime:
    """C, Rust and Go compiled to WASI: a fresh Store and instance per call, modules cached per fn_id."""

    def __init__(self, scratch):
        """`scratch` is unused: wasm calls touch no files (every runtime is made with it)."""
        import wasmtime  # here, not at import time: only workers that run wasm need it

        from reference import wasi, wasm

        self.wasmtime, self.wasm, self.wasi = wasmtime, wasm, wasi
        self.engine = wasm.make_engine()
        self.linker = wasmtime.Linker(self.engine)
        self.host = wasi.Wasi(self.linker)  # the WASI host functions, bound to one call at a time
        self.cache = OrderedDict()      # fn_id -> InstancePre (the linking is done once)
        # Made in the worker, after the fork: threads do not survive a fork.
        self.watch = DeadlineWatch(self.engine)

    def _instance_pre(self, job):
        pre = self.cache.get(job.fn_id)
        if pre is None:
            module = self.wasm.load_module(self.engine, job.fn_dir)
            self.host.define_missing(module)
            pre = self.linker.instantiate_pre(module)
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
        stdout, stderr = Capture(job.output_limit), Capture(job.output_limit)
        call = wasi.Call(job.input, stdout, stderr, deadline=time.monotonic() + job.timeout_ms / 1000)
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


class DeadlineWatch:
    """Stops a wasm call at its deadline with wasmtime's epoch interruption, without a clock
    ticking all the time: a thread bumps the engine's epoch only once the running call is past
    its deadline. It looks every WATCH_PERIOD_S while calls run (and sleeps to the exact deadline
    when that is nearer), and parks while the worker is idle. A fixed 5 ms ticker cost each
    idle worker 2 % of a core.

    Every store's deadline is one epoch ahead, and the epoch moves only under the lock while the
    call it is meant for still runs, so the next call can never be stopped by a late bump."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.call = None                # (number, deadline) of the running call
        self.number, self.last_end = 0, time.monotonic()
        self.parked, self.stopping = False, False
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wasm-deadlines", daemon=True)
        self.thread.start()

    def begin(self, store, deadline):
        with self.lock:
            self.number += 1
            self.call = (self.number, deadline)
            store.set_epoch_deadline(1)
        if self.parked:
            self.wake.set()

    def end(self):
        with self.lock:
            self.call, self.last_end = None, time.monotonic()

    def close(self):
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=1)

    def _run(self):
        while not self.stopping:
            call, now = self.call, time.monotonic()
            if call is None and now - self.last_end > WATCH_PARK_S:
                self.parked = True
                self.wake.clear()
                if self.call is None and not self.stopping:   # a begin() before `parked` was seen
                    self.wake.wait()
                self.parked = False
                continue
            if call is not None and now >= call[1]:
                with self.lock:
                    if self.call is not None and self.call[0] == call[0]:
                        self.engine.increment_epoch()
                        self.call = None        # once is enough: the call traps at its next check
                continue
            nap = WATCH_PERIOD_S if call is None else min(WATCH_PERIOD_S, call[1] - now)
            self.wake.wait(nap)
            self.wake.clear()


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


# --- interpreters ----------------------------------------------------------------------------

def _sandbox_user():
    """(uid, gid) to run functions as when the platform is root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "nfsnobody"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            pass
    return 65534, 65534


class ProcessRuntime:
    """A script run by an interpreter in a child process: empty environment, private scratch
    directory, rlimits, its own process group, an unprivileged user when we are root."""

    lang = None
    memory_words = ()           # words in stderr that mean the interpreter ran out of memory

    def __init__(self, scratch):
        self.scratch = scratch
        self.user = _sandbox_user()
        tc = toolchains.find(self.lang)
        self.interpreter = tc.path if tc else None

    def argv(self, job, script):
        raise NotImplementedError

    def address_space(self, job):
        return job.memory_mb << 20

    def run(self, job):
        if self.interpreter is None:
            return Outcome(exit_code=1, error="runtime",
                           message="no %s interpreter on this server: %s" % (self.lang, toolchains.install_hint(self.lang)))
        started = time.perf_counter()
        call_dir = tempfile.mkdtemp(prefix=call_prefix(), dir=self.scratch)
        try:
            script = os.path.join(call_dir, "code." + LANGUAGES[self.lang].ext)
            shutil.copyfile(os.path.join(job.fn_dir, "code." + LANGUAGES[self.lang].ext), script)
            if self.user:
                for path in (call_dir, script):
                    os.chown(path, *self.user)
            out = self._run_child(job, self.argv(job, script), call_dir, started)
            # Tracebacks name the script by its scratch path, which means nothing to the user.
            out.stderr = out.stderr.replace(call_dir.encode() + b"/", b"")
            return out
        finally:
            shutil.rmtree(call_dir, ignore_errors=True)

    def cpu_seconds(self, job):
        return math.ceil(job.timeout_ms / 1000) + 1

    def _preexec(self, job, cpu=True):
        """The rlimits, set in the child before exec. A warm process that outlives calls gets no
        CPU limit of its own (cpu=False): each call's process sets it."""
        limits = [(resource.RLIMIT_AS, self.address_space(job)),
                  (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256)]
        if cpu:
            limits.append((resource.RLIMIT_CPU, self.cpu_seconds(job)))
        if self.user:
            # Counted per user (threads too), so only meaningful for the shared sandbox user.
            limits.append((resource.RLIMIT_NPROC, 512))

        def preexec():
            for which, value in limits:
                resource.setrlimit(which, (value, value))
        return preexec

    def spawn(self, argv, job, cwd, stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cpu=True, pass_fds=()):
        """Start the interpreter locked down: empty environment, its own session (so its process
        group can be killed as one), the rlimits, and the sandbox user when we are root."""
        user = dict(user=self.user[0], group=self.user[1], extra_groups=[]) if self.user else {}
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env={"PATH": "/usr/bin:/bin"},
                                start_new_session=True, preexec_fn=self._preexec(job, cpu), pass_fds=pass_fds, **user)

    def _run_child(self, job, argv, cwd, started):
        stdout, stderr = Capture(job.output_limit), Capture(job.output_limit)
        with input_fd(job.input) as stdin:
            try:
                proc = self.spawn(argv, job, cwd, stdin)
            except OSError as exc:
                return Outcome(exit_code=1, error="runtime", message="could not start %s: %s" % (argv[0], exc))
        init_ms = _ms(started)
        run_started = time.perf_counter()
        timed_out = self._collect(proc, job, stdout, stderr)
        return self.outcome(job, stdout, stderr, proc.returncode, timed_out, init_ms, run_started)

    def outcome(self, job, stdout, stderr, code, timed_out, init_ms, run_started):
        """The Outcome of a finished call from its exit code (negative: killed by that signal)."""
        out = Outcome(stdout=stdout.value(), stderr=stderr.value(), truncated=stdout.truncated or stderr.truncated,
                      init_ms=init_ms, exec_ms=_ms(run_started))
        out.exit_code = code if code >= 0 else 128 - code
        if timed_out or code == -signal.SIGXCPU:
            out.error = "timeout"
            out.message = "the function ran longer than its %d ms limit and was stopped" % job.timeout_ms
        elif code != 0 and any(w in out.stderr for w in self.memory_words + LOADER_MEMORY_WORDS):
            out.error = "memory"
            out.message = "the function ran out of its %d MiB of memory" % job.memory_mb
        elif code < 0:
            out.error = "runtime"
            out.message = "the function was killed by signal %s" % signal.Signals(-code).name
        return out

    def _collect(self, proc, job, stdout, stderr):
        """Read both pipes until the deadline; True when it was reached. Afterwards the whole
        process group and any escaped descendants are dead, and the child is reaped."""
        deadline = time.monotonic() + job.timeout_ms / 1000
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, stdout)
        sel.register(proc.stderr, selectors.EVENT_READ, stderr)
        timed_out, exited_at = False, None
        try:
            while sel.get_map():
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    # Whatever it left running still holds the pipes: end it, then drain a little.
                    _kill_tree(proc)
                    exited_at = now
                if exited_at is not None and now - exited_at > KILL_GRACE_S:
                    break
                if exited_at is None and now >= deadline:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=max(0.0, min(deadline - now, 0.05))):
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.write(data)    # past the limit it is read and dropped, so the writer never blocks
                    else:
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
            _kill_tree(proc)
            proc.stdout.close()
            proc.stderr.close()
        return timed_out

    def close(self):
        pass


def _kill_tree(proc):
    """SIGKILL the child's process group, reap it, then the descendants that left the group
    (setsid, double fork): as subreaper the worker inherits them once their parents die."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    kill_strays()


def kill_strays():
    """SIGKILL and reap every child of ours that is not a warm process we keep."""
    for _ in range(10):
        strays = _stray_children()
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


# Pids of the warm interpreters this worker keeps between calls (reference/warm.py): children
# of ours, but not strays.
own_children = set()


def _stray_children():
    """Pids of our child processes: in a worker each one is left over from the call that just
    ended (a worker keeps no other child of its own but its warm interpreters)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == me and int(entry) not in own_children:
            found.append(int(entry))
    return found


class NodeRuntime(ProcessRuntime):
    lang = "js"
    memory_words = (b"heap out of memory", b"Allocation failed", b"out of memory")

    def argv(self, job, script):
        return [self.interpreter, "--max-old-space-size=%d" % job.memory_mb, script]

    def address_space(self, job):
        # V8 reserves a large virtual cage up front: the heap flag holds the real limit,
        # the address-space cap only stops runaway native allocations.
        return (job.memory_mb + 2048) << 20


class PythonRuntime(ProcessRuntime):
    lang = "python"
    memory_words = (b"MemoryError",)

    def argv(self, job, script):
        return [self.interpreter, "-I", "-B", script]


class PhpRuntime(ProcessRuntime):
    lang = "php"
    memory_words = (b"Allowed memory size", b"Out of memory")

    def address_space(self, job):
        # php's own memory_limit is the real limit; its shared libraries (ICU) need room beyond it.
        return (job.memory_mb + 128) << 20

    def argv(self, job, script):
        return [self.interpreter, "-n", "-d", "memory_limit=%dM" % job.memory_mb,
                "-d", "display_errors=stderr", script]


class HtmlRuntime:
    """A static page: the stored code is the output."""

    def __init__(self, scratch):
        pass

    def run(self, job):
        stdout = Capture(job.output_limit)
        with open(os.path.join(job.fn_dir, "code.html"), "rb") as f:
            stdout.write(f.read())
        return Outcome(stdout=stdout.value(), truncated=stdout.truncated)

    def close(self):
        pass


RUNTIMES = {"wasm": WasmRuntime, "node": NodeRuntime, "python": PythonRuntime, "php": PhpRuntime, "html": HtmlRuntime}
RUNTIME_OF = {"c": "wasm", "rust": "wasm", "go": "wasm", "js": "node", "python": "python", "php": "php", "html": "html"}


def _become_subreaper():
    # Descendants that escape the function's process group are re-parented to us, not to init,
    # so they can be found and killed after the call.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper: %s", exc)


class WorkerRuntimes:
    """Every runtime of one worker, made lazily. Create it after the fork; `run` never raises
    for the function's fault, `close` releases the engine and stops the warm interpreters.
    warm=False starts a fresh interpreter per call (the simple path, kept to compare with); by
    default it is FAAS_WARM=0 in the environment, so a whole stack can be measured both ways."""

    def __init__(self, warm=None):
        if warm is None:
            warm = os.environ.get("FAAS_WARM", "1") != "0"
        _become_subreaper()
        self.scratch = _scratch_root()
        _sweep_scratch(self.scratch)
        self.runtimes = {}
        self.seen = set()
        self.classes = dict(RUNTIMES)
        if warm:
            from reference import warm as warm_runtimes  # it builds on this module's classes
            self.classes.update(warm_runtimes.WARM_RUNTIMES)

    def runtime(self, lang):
        name = RUNTIME_OF[lang]
        if name not in self.runtimes:
            self.runtimes[name] = self.classes[name](self.scratch)
        return self.runtimes[name]

    def run(self, job):
        cold = job.fn_id not in self.seen
        started = time.perf_counter()
        try:
            runtime = self.runtime(job.lang)
            # A language's first call in this worker also starts its runtime (importing wasmtime
            # and building its engine: about 50 ms): that is part of this call's cold start.
            setup_ms = _ms(started)
            out = runtime.run(job)
            out.init_ms = (out.init_ms or 0.0) + setup_ms
        except Exception as exc:  # a broken function directory must not take the worker down
            log.exception("job %s (%s) failed in the runtime", job.job_id, job.fn_id)
            out = Outcome(exit_code=1, error="runtime", message="the function could not run: %s" % exc)
        else:
            self.seen.add(job.fn_id)
        # A warm runtime also says cold when it had to start an interpreter (after a recycle).
        out.cold = cold or out.cold
        return out

    def close(self):
        for runtime in self.runtimes.values():
            runtime.close()
        self.runtimes.clear()


def call_prefix():
    """Call directories are named for the worker that made them, so one killed mid-call (or with
    interpreters started ahead, reference/warm.py) has its leftovers swept by the next worker."""
    return "call-%d-" % os.getpid()


def _sweep_scratch(scratch):
    for entry in os.listdir(scratch):
        parts = entry.split("-")
        if len(parts) >= 3 and parts[0] == "call" and parts[1].isdigit() and not os.path.exists("/proc/" + parts[1]):
            shutil.rmtree(os.path.join(scratch, entry), ignore_errors=True)


def _scratch_root():
    """The directory that holds every call's private directory. One shared, fixed place, so a
    worker killed mid-call leaves at most one call directory behind, not a directory per worker.
    0711: the sandbox user may enter its own call directory (random name) but list none."""
    path = os.path.join(tempfile.gettempdir(), "minifaas-calls-%d" % os.geteuid())
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(path)
    # Someone else's directory (or a symlink) in a shared /tmp is not to be trusted.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        log.warning("%s is not ours; using a private scratch directory", path)
        path = tempfile.mkdtemp(prefix="minifaas-calls-")
    os.chmod(path, 0o711)
    return path
