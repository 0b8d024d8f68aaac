"""Functions deployed with reuse=true: every call of a function goes to one long-lived
interpreter of that function in this worker (a resident), so node, python3 and php pay no
start-up per call, and what a call leaves in globals and module state (and in its directory and
/tmp) is there for the next call of the same function in the same worker: the semantics of
OpenWhisk's and Lambda's warm containers, chosen per function. The default (reuse=false) keeps
every call fresh (reference/worker/warm/runtimes.py).

A resident is started at its function's first call, in the same sandbox as a fresh call
(bubblewrap as the function's own uid, seccomp, rlimits, a cgroup of its own limiting memory and
pids to the function's), and kept while it is healthy. It runs the function's script once per
call through a helper (reuse_node.js, reuse_python.py, reuse_php.php) that waits for a byte on a
pipe, runs the script again in the same interpreter, and answers the call's exit status on
another pipe. Its stdin is a file, stdout and stderr memory files: the worker fills the first,
empties the other two and puts their shared offsets back to 0 before each call, and reads them
(at most the output limit) after it, so a call's output is its own. After each call the worker
kills every process of the resident's cgroup that is not the interpreter (what the call left
running). A call that times out, runs out of memory, exits (exit(), process.exit) or crashes
ends its resident with it: the call gets its error, the next call starts a new one.
"""

import logging
import os
import select
import shutil
import signal
import tempfile
import time
from itertools import count

from reference.functions.languages import LANGUAGES
from reference.wire.jobs import Outcome
from reference.worker.capture import ms as _ms
from reference.worker.sandbox import process
from reference.worker.sandbox.scratch import call_prefix
from reference.worker.warm.runtimes import START_TIMEOUT_S, WarmPool, _captured, _helper, _helper_inside, _private_dir

log = logging.getLogger(__name__)

RESIDENTS_PER_RUNTIME = 4   # residents per language and worker, least recently used closed first
_numbers = count(1)


class ResidentLost(Exception):
    """The resident died or did not answer; `timed_out` when it was the call's deadline, `oom`
    when its group ran out of memory first."""

    def __init__(self, text, timed_out=False, oom=False):
        super().__init__(text)
        self.timed_out, self.oom = timed_out, oom


class Resident:
    """One long-lived interpreter of one function: its sandbox, cgroup, stdio files and pipes."""

    def __init__(self, runtime, job, helper):
        # Started with the function's env and secrets (job.env): a call with others gets a new one.
        self.fn_id, self.memory_mb, self.env = job.fn_id, job.memory_mb, dict(job.env or {})
        self.proc, self.group, self.go_w, self.done_r = None, None, None, None
        self.keep = set()
        owner = runtime.owner(job)
        self.call_dir = None if runtime.sandboxed else _private_dir(runtime.scratch, call_prefix(), owner)
        self.inside = process.CALL_DIR if runtime.sandboxed else self.call_dir
        self.stdin = tempfile.TemporaryFile()
        self.out = os.memfd_create("stdout", os.MFD_CLOEXEC)
        self.err = os.memfd_create("stderr", os.MFD_CLOEXEC)
        if runtime.cgroups is not None:
            self.group = runtime.cgroups.group("reuse-%d" % next(_numbers))
        go_r = done_w = code = None
        try:
            helper_inside, ro_binds = _helper_inside(runtime, helper)
            sandbox, pass_fds = None, ()
            script = os.path.join(self.inside, runtime.script_name())
            if runtime.sandboxed:
                code = runtime.code_fd(job)
                sandbox = dict(ro_binds=ro_binds, extra=runtime.call_view(code), chdir=process.CALL_DIR)
                pass_fds = (code,)
            else:
                shutil.copyfile(os.path.join(job.fn_dir, "code." + LANGUAGES[runtime.lang].ext), script)
                if owner:
                    os.chown(script, *owner)
            go_r, self.go_w = os.pipe()
            self.done_r, done_w = os.pipe()
            argv = runtime.resident_argv(job, helper_inside, script, go_r, done_w)
            # No CPU rlimit: it would add up over calls; the worker's deadline holds each call.
            self.proc = runtime.spawn(argv, job, self.call_dir, stdin=self.stdin, stdout=self.out, stderr=self.err,
                                      cpu=False, pass_fds=pass_fds + (go_r, done_w), group=self.group,
                                      sandbox=sandbox, helper=True)
            process.own_children.add(self.proc.pid)
            os.close(done_w)
            done_w = None
            ready = self._answer(time.monotonic() + START_TIMEOUT_S)
            if ready != "ready":
                raise ResidentLost("said %r instead of ready" % ready)
            # Its processes before any call ran: bwrap, its init and the interpreter.
            self.keep = self.group.members() if self.group is not None else set()
        except ResidentLost as exc:
            text = _captured(self.err, 4096).value().decode(errors="replace").strip()
            self.close()
            raise ResidentLost(text or "the %s interpreter did not start: %s" % (runtime.lang, exc)) from None
        except BaseException:
            self.close()
            raise
        finally:
            for fd in (go_r, done_w, code):
                if fd is not None:
                    os.close(fd)

    @property
    def pid(self):
        return self.proc.pid

    def healthy(self, job):
        return self.memory_mb == job.memory_mb and self.env == (job.env or {}) and self.proc.poll() is None

    def _answer(self, deadline, watch=None):
        """One line from the done pipe; ResidentLost when it closed or the deadline passed, or
        when `watch` (the group's OOM watch) fired first: then the call is over its memory_mb."""
        data = b""
        waited = [self.done_r] if watch is None else [self.done_r, watch]
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready = select.select(waited, [], [], left)[0] if left > 0 else []
            if not ready:
                raise ResidentLost("no answer in time", timed_out=True)
            if ready == [watch]:
                raise ResidentLost("out of memory", oom=True)
            chunk = os.read(self.done_r, 256)
            if not chunk:
                raise ResidentLost("the interpreter is gone")
            data += chunk
        return data.decode(errors="replace").strip()

    def call(self, job):
        """Run one call; (exit status, resident still usable, timed out)."""
        for fd in (self.out, self.err):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        fd = self.stdin.fileno()
        os.ftruncate(fd, 0)
        if job.input:
            os.pwrite(fd, job.input, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        watch = self.group.oom_watch() if self.group is not None else None
        try:
            os.write(self.go_w, b"g")
        except OSError:
            return self._ended(), False, False
        try:
            status, _, restart = self._answer(time.monotonic() + job.timeout_ms / 1000, watch).partition(" ")
            status = int(status)
        except ResidentLost as exc:
            if exc.timed_out and self.proc.poll() is None:
                return -signal.SIGKILL, False, True
            if exc.oom:
                process.end_sandbox(self.proc, self.group)      # over its memory_mb: all of it ends
            return self._ended(), False, False
        except ValueError:
            return 1, False, False
        self._kill_leftovers()
        return status, restart != "1", False

    def _ended(self):
        """The interpreter's own exit status (it ended the call: exit, a crash, a kill)."""
        try:
            return self.proc.wait(timeout=2.0)
        except Exception:
            return -signal.SIGKILL

    def _kill_leftovers(self):
        if self.group is not None and self.group.members() - self.keep:
            self.group.kill(spare=self.keep)

    def output(self, limit):
        return _captured(self.out, limit), _captured(self.err, limit)

    def close(self):
        for fd in (self.go_w, self.done_r):
            if fd is not None:
                os.close(fd)
        self.go_w = self.done_r = None
        if self.proc is not None:
            if self.proc.poll() is None and self.group is not None:
                process.end_sandbox(self.proc, self.group)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            process.own_children.discard(self.proc.pid)
            self.proc = None
        if self.group is not None:
            self.group.destroy()
            self.group = None
        process.reap_zombies()
        for fd in (self.out, self.err):
            if fd is not None:
                os.close(fd)
        self.out = self.err = None
        self.stdin.close()
        if self.call_dir is not None:
            shutil.rmtree(self.call_dir, ignore_errors=True)
            self.call_dir = None


class ResidentRuntime:
    """A script runtime whose calls go to the function's resident (mixed into its ProcessRuntime)."""

    helper_name = None

    def __init__(self, scratch):
        super().__init__(scratch)
        self.helper = _helper(scratch, self.helper_name)
        self.pool = WarmPool(RESIDENTS_PER_RUNTIME)

    def resident_argv(self, job, helper, script, go_fd, done_fd):
        raise NotImplementedError

    def run(self, job):
        if self.interpreter is None:
            return super().run(job)     # says which interpreter is missing
        started = time.perf_counter()
        resident = self.pool.take(job.fn_id)
        cold = resident is None or not resident.healthy(job)
        if cold:
            if resident is not None:
                resident.close()
            try:
                resident = Resident(self, job, self.helper)
            except ResidentLost as exc:
                return self._failed_start(job, str(exc))
            except OSError as exc:
                if not os.path.isdir(job.fn_dir):
                    raise
                return Outcome(exit_code=1, error="runtime", cold=True,
                               message="could not start %s: %s" % (self.interpreter, exc))
        keep = False
        try:
            init_ms = _ms(started)
            run_started = time.perf_counter()
            code, keep, timed_out = resident.call(job)
            if not keep:
                # What it left, or the whole of it after a timeout: killed before its output is read.
                if resident.group is not None:
                    process.end_sandbox(resident.proc, resident.group)
            oom = resident.group is not None and resident.group.ran_out_of_memory()
            stdout, stderr = resident.output(job.output_limit)
            out = self.outcome(job, stdout, stderr, code, timed_out, init_ms, run_started, oom)
            out.stderr = out.stderr.replace(resident.inside.encode() + b"/", b"")
            keep = keep and out.error is None
        finally:
            pid = resident.pid if resident.proc is not None else None
            if keep:
                self.pool.put(job.fn_id, resident)
            else:
                resident.close()
                process.kill_strays()
        out.cold = cold
        out.extra["runtime_pid"] = pid
        out.extra["reuse"] = True
        return out

    def _failed_start(self, job, text):
        if any(word.decode() in text for word in self.memory_words + process.LOADER_MEMORY_WORDS):
            return Outcome(exit_code=1, error="memory", cold=True,
                           message="the function ran out of its %d MiB of memory" % job.memory_mb)
        return Outcome(exit_code=1, error="runtime", cold=True,
                       message="%s could not start: %s" % (self.lang, (text.splitlines() or ["?"])[-1]))

    def close(self):
        self.pool.close()
        super().close()


class ResidentNodeRuntime(ResidentRuntime, process.NodeRuntime):
    helper_name = "reuse_node.js"

    def resident_argv(self, job, helper, script, go_fd, done_fd):
        return [self.interpreter, "--max-old-space-size=%d" % job.memory_mb, helper, script, str(go_fd), str(done_fd)]


class ResidentPythonRuntime(ResidentRuntime, process.PythonRuntime):
    helper_name = "reuse_python.py"

    def resident_argv(self, job, helper, script, go_fd, done_fd):
        return [self.interpreter, "-I", "-B", helper, script, str(go_fd), str(done_fd)]


class ResidentPhpRuntime(ResidentRuntime, process.PhpRuntime):
    helper_name = "reuse_php.php"

    def resident_argv(self, job, helper, script, go_fd, done_fd):
        return [self.interpreter, "-n", "-d", "memory_limit=%dM" % job.memory_mb, "-d", "display_errors=stderr",
                helper, script, str(go_fd), str(done_fd)]


RESIDENT_RUNTIMES = {"js": ResidentNodeRuntime, "python": ResidentPythonRuntime, "php": ResidentPhpRuntime}
