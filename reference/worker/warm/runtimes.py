"""Warm interpreters for the worker runtimes: a fork server per Python function, and for node and
PHP (which cannot fork) an interpreter started one call ahead, held before the script until its call.

Every call still gets a process of its own, so plain scripts keep working and nothing leaks from
one call to the next; what is saved is the interpreter's start-up. The sandbox of reference/worker/sandbox/process.py
holds for warm calls too: sandbox user, empty environment, rlimits, a private call directory, a
session per call killed whole at the deadline, and no descendant outliving its call.
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections import OrderedDict

from reference.wire.jobs import Outcome
from reference.worker.capture import Capture, input_fd
from reference.worker.capture import ms as _ms
from reference.worker.sandbox import process
from reference.worker.sandbox.scratch import call_prefix

log = logging.getLogger(__name__)

WARM_PER_RUNTIME = 4        # warm processes per runtime and worker, least recently used closed first
WARM_MAX_AGE_S = 600.0      # an older warm process is replaced at its next call
START_TIMEOUT_S = 10.0      # for a fork server to compile its function, or to fork a call


class WarmProcessLost(Exception):
    """The warm process died or stopped answering (a function may kill its own fork server)."""


def _helper(scratch, name):
    """A copy of one of our helper scripts in the scratch root, where the sandbox user can read
    it (the installed package may not be). Named by its content, so workers never clash."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name), "rb") as f:
        data = f.read()
    stem, ext = os.path.splitext(name)
    path = os.path.join(scratch, "%s-%s%s" % (stem, hashlib.sha256(data).hexdigest()[:12], ext))
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=scratch)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


def _captured(fd, limit):
    """What a call wrote into a memory file, as a Capture: at most `limit` bytes kept."""
    capture = Capture(limit)
    size = os.fstat(fd).st_size
    if size:
        capture.write(os.pread(fd, min(size, limit + 1), 0))
    capture.truncated = capture.truncated or size > limit
    return capture


def _private_dir(runtime, prefix):
    path = tempfile.mkdtemp(prefix=prefix, dir=runtime.scratch)
    if runtime.user:
        os.chown(path, *runtime.user)
    return path


class CallDirs:
    """A runtime's call directories, recycled: making one and removing it cost about 0.16 ms of
    CPU a call on ext4. A call that left its directory exactly as it was made (empty, same owner,
    mode 0700, no extended attributes) hands it on under a new random name, so a name a call has
    seen is gone when it ends, as before; any other is removed."""

    def __init__(self, runtime):
        self.runtime, self.spare = runtime, None

    def take(self):
        path, self.spare = self.spare, None
        return path or _private_dir(self.runtime, call_prefix())

    def give_back(self, path):
        if self.spare is None and self._as_made(path):
            renamed = os.path.join(os.path.dirname(path), call_prefix() + secrets.token_hex(6))
            try:
                os.rename(path, renamed)
                self.spare = renamed
                return
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)

    def _as_made(self, path):
        try:
            st = os.lstat(path)
            owner = self.runtime.user or (os.geteuid(), os.getegid())
            return (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
                    and (st.st_uid, st.st_gid) == tuple(owner) and not os.listdir(path)
                    and not os.listxattr(path))
        except OSError:
            return False

    def close(self):
        if self.spare is not None:
            shutil.rmtree(self.spare, ignore_errors=True)
            self.spare = None


class WarmPool:
    """The warm processes of one runtime, at most one per function and `limit` in all; the least
    recently used is closed to make room."""

    def __init__(self, limit=WARM_PER_RUNTIME):
        self.limit, self.procs = limit, OrderedDict()

    def take(self, fn_id):
        return self.procs.pop(fn_id, None)

    def put(self, fn_id, proc):
        old = self.procs.pop(fn_id, None)
        if old is not None:
            old.close()
        self.procs[fn_id] = proc
        while len(self.procs) > self.limit:
            _, evicted = self.procs.popitem(last=False)
            log.debug("closing the warm process of %s to make room", evicted.fn_id)
            evicted.close()

    def close(self):
        for proc in self.procs.values():
            proc.close()
        self.procs.clear()


# --- Python: a fork server per function ------------------------------------------------------

class ForkServer:
    """A python3 running warm_python.py for one function: its code compiled once, a forked child
    per call. It runs as the sandbox user with the function's rlimits (but CPU, set per call)."""

    def __init__(self, runtime, job, helper):
        self.fn_id, self.memory_mb, self.born = job.fn_id, job.memory_mb, time.monotonic()
        self.proc = None
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The source goes in on stdin, opened here: the sandbox user may not read fn_dir.
            with open(os.path.join(job.fn_dir, "code.py"), "rb") as source:
                argv = [runtime.interpreter, "-I", "-B", helper, str(theirs.fileno()), str(os.getpid())]
                # Its stderr is its own only until the first call: it says why a start failed.
                # Its directory is the scratch root, which it may enter but not list or write:
                # a killed worker leaves nothing of its fork servers behind.
                self.proc = runtime.spawn(argv, job, runtime.scratch, stdin=source, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, cpu=False, pass_fds=(theirs.fileno(),))
            process.own_children.add(self.proc.pid)
            theirs.close()
            self.receive(START_TIMEOUT_S)
        except WarmProcessLost:
            theirs.close()
            self._kill()
            text = self.proc.stderr.read().decode(errors="replace").strip()
            self.close()
            raise WarmProcessLost(text or "the python fork server did not start") from None
        except BaseException:
            theirs.close()
            self.close()
            raise

    @property
    def pid(self):
        return self.proc.pid

    def fresh(self, job):
        return (self.memory_mb == job.memory_mb and self.proc.poll() is None
                and time.monotonic() - self.born < WARM_MAX_AGE_S)

    def receive(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except OSError as exc:      # socket.timeout included
            raise WarmProcessLost("the python fork server did not answer: %s" % exc) from None
        if not data:
            raise WarmProcessLost("the python fork server is gone")
        return json.loads(data)

    def fork(self, call_dir, cpu, fds):
        """Start one call with these stdin, stdout, stderr; the pid of its process (and group)."""
        try:
            socket.send_fds(self.sock, [json.dumps({"dir": call_dir, "cpu": cpu}).encode()], fds)
        except OSError as exc:
            raise WarmProcessLost("the python fork server is gone: %s" % exc) from None
        return self.receive(START_TIMEOUT_S)["pid"]

    def _kill(self):
        # Its session only: calls run in sessions of their own and are over by now.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def close(self):
        self.sock.close()
        if self.proc is not None:
            self._kill()
            self.proc.stderr.close()
            process.own_children.discard(self.proc.pid)


class WarmPythonRuntime(process.PythonRuntime):
    """Python served by a fork server per function: about a millisecond per call instead of an
    interpreter start. The fork server is replaced after any call that ended in an error."""

    def __init__(self, scratch):
        super().__init__(scratch)
        self.helper = _helper(scratch, "warm_python.py")
        self.pool = WarmPool()
        self.dirs = CallDirs(self)

    def run(self, job):
        if self.interpreter is None:
            return super().run(job)     # says which interpreter is missing
        started = time.perf_counter()
        server = self.pool.take(job.fn_id)
        cold = server is None or not server.fresh(job)
        if cold:
            if server is not None:
                server.close()
            try:
                server = ForkServer(self, job, self.helper)
            except WarmProcessLost as exc:
                return self._failed_start(job, str(exc))
        keep = False
        call_dir = self.dirs.take()
        try:
            out = self._call(server, job, call_dir, started)
            out.stderr = out.stderr.replace(call_dir.encode() + b"/", b"")
            keep = out.error is None
        finally:
            self.dirs.give_back(call_dir)
            if keep:
                self.pool.put(job.fn_id, server)
            else:
                server.close()
        out.cold = cold
        out.extra["runtime_pid"] = server.pid
        return out

    def close(self):
        self.pool.close()
        self.dirs.close()

    def _failed_start(self, job, text):
        if any(word.decode() in text for word in self.memory_words + process.LOADER_MEMORY_WORDS):
            return Outcome(exit_code=1, error="memory", cold=True,
                           message="the function ran out of its %d MiB of memory" % job.memory_mb)
        return Outcome(exit_code=1, error="runtime", cold=True,
                       message="python could not start: %s" % (text.splitlines() or ["?"])[-1])

    def _call(self, server, job, call_dir, started):
        # The call writes its stdout and stderr into memory files, not pipes: the worker is not
        # woken for every write and end of file, only by the fork server's two reports.
        out_fd, err_fd = os.memfd_create("stdout", os.MFD_CLOEXEC), os.memfd_create("stderr", os.MFD_CLOEXEC)
        try:
            with input_fd(job.input) as stdin:
                pid = server.fork(call_dir, self.cpu_seconds(job), [stdin, out_fd, err_fd])
            init_ms = _ms(started)
            run_started = time.perf_counter()
            code, timed_out = self._wait_call(server, pid, job)
            stdout, stderr = _captured(out_fd, job.output_limit), _captured(err_fd, job.output_limit)
        except WarmProcessLost as exc:
            process.kill_strays()
            return Outcome(exit_code=1, error="runtime", message="the function's interpreter was lost: %s" % exc)
        finally:
            os.close(out_fd)
            os.close(err_fd)
        return self.outcome(job, stdout, stderr, code, timed_out, init_ms, run_started)

    def _wait_call(self, server, pid, job):
        """Wait for the fork server's report of the call's end until the deadline, where the
        call's session is killed. Returns (exit code, timed out)."""
        try:
            return server.receive(job.timeout_ms / 1000)["status"], False
        except WarmProcessLost:
            if server.proc.poll() is not None:
                raise
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return server.receive(START_TIMEOUT_S)["status"], True


# --- node and PHP: an interpreter started one call ahead ---------------------------------------

class Spare:
    """An interpreter started before its call, with its call directory and limits, paused by a
    preloaded helper until `go` (a byte on a pipe); its stdin is a file filled in at `go`."""

    def __init__(self, runtime, job, helper):
        self.fn_id, self.born = job.fn_id, time.monotonic()
        self.limits = (job.memory_mb, job.timeout_ms)
        self.call_dir = _private_dir(runtime, call_prefix())
        self.stdin = tempfile.TemporaryFile()
        self.proc, self.go_w = None, None
        go_r = None
        try:
            script = os.path.join(self.call_dir, "code." + runtime.ext)
            shutil.copyfile(os.path.join(job.fn_dir, "code." + runtime.ext), script)
            if runtime.user:
                os.chown(script, *runtime.user)
            go_r, self.go_w = os.pipe()
            self.proc = runtime.spawn(runtime.warm_argv(job, script, helper, go_r), job, self.call_dir,
                                      stdin=self.stdin, pass_fds=(go_r,))
            process.own_children.add(self.proc.pid)
        except BaseException:
            self.close()
            raise
        finally:
            if go_r is not None:
                os.close(go_r)

    @property
    def pid(self):
        return self.proc.pid

    def fresh(self, job):
        return (self.limits == (job.memory_mb, job.timeout_ms) and self.proc.poll() is None
                and time.monotonic() - self.born < WARM_MAX_AGE_S)

    def go(self, data):
        # pwrite leaves the shared file offset at 0, where the interpreter starts reading.
        os.pwrite(self.stdin.fileno(), data, 0)
        os.write(self.go_w, b"g")
        os.close(self.go_w)
        self.go_w = None
        # From now on it is a call like any other: its leftovers are strays.
        process.own_children.discard(self.proc.pid)

    def close(self):
        """Kill it if it still runs (a spare never used; a used one was killed and reaped by its
        call) and remove its call directory. Never kills strays: another call may be running."""
        if self.go_w is not None:
            os.close(self.go_w)
            self.go_w = None
        if self.proc is not None:
            if self.proc.returncode is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait()
            process.own_children.discard(self.proc.pid)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.stdin.close()
        shutil.rmtree(self.call_dir, ignore_errors=True)


class SpareRuntime(process.ProcessRuntime):
    """A script runtime whose next interpreter is started while the current call runs, so a
    call only waits for start-up when none was ready (the first call, or other limits)."""

    helper_name = None

    def __init__(self, scratch):
        super().__init__(scratch)
        self.ext = {"js": "js", "php": "php"}[self.lang]
        self.helper = _helper(scratch, self.helper_name)
        self.pool = WarmPool()

    def warm_argv(self, job, script, helper, go_fd):
        raise NotImplementedError

    def run(self, job):
        if self.interpreter is None:
            return super().run(job)
        started = time.perf_counter()
        spare = self.pool.take(job.fn_id)
        cold = spare is None or not spare.fresh(job)
        if cold:
            if spare is not None:
                spare.close()
            try:
                spare = Spare(self, job, self.helper)
            except OSError as exc:
                if not os.path.isdir(job.fn_dir):
                    raise
                return Outcome(exit_code=1, error="runtime", message="could not start %s: %s" % (self.interpreter, exc))
        try:
            stdout, stderr = Capture(job.output_limit), Capture(job.output_limit)
            spare.go(job.input)
            init_ms = _ms(started)
            run_started = time.perf_counter()
            self._start_next(job)
            timed_out = self._collect(spare.proc, job, stdout, stderr)
            out = self.outcome(job, stdout, stderr, spare.proc.returncode, timed_out, init_ms, run_started)
            out.stderr = out.stderr.replace(spare.call_dir.encode() + b"/", b"")
        finally:
            spare.close()
        out.cold = cold
        out.extra["runtime_pid"] = spare.pid
        return out

    def close(self):
        self.pool.close()

    def _start_next(self, job):
        try:
            self.pool.put(job.fn_id, Spare(self, job, self.helper))
        except OSError as exc:
            log.warning("could not start a %s ahead for %s: %s", self.lang, job.fn_id, exc)


class WarmNodeRuntime(SpareRuntime, process.NodeRuntime):
    helper_name = "warm_node.js"

    def warm_argv(self, job, script, helper, go_fd):
        # The helper takes the go pipe's fd off the end of argv before the script runs.
        return [self.interpreter, "--max-old-space-size=%d" % job.memory_mb, "-r", helper, script, str(go_fd)]


class WarmPhpRuntime(SpareRuntime, process.PhpRuntime):
    helper_name = "warm_php.php"

    def warm_argv(self, job, script, helper, go_fd):
        return [self.interpreter, "-n", "-d", "memory_limit=%dM" % job.memory_mb, "-d", "display_errors=stderr",
                "-d", "auto_prepend_file=" + helper, "-d", "minifaas.go_fd=%d" % go_fd, script]


WARM_RUNTIMES = {"python": WarmPythonRuntime, "node": WarmNodeRuntime, "php": WarmPhpRuntime}
