"""Warm interpreters for the worker runtimes: a fork server per Python and per PHP function, and
for node (which cannot fork) an interpreter started one call ahead, held before the script until
its call.

Every call still gets a process of its own, so plain scripts keep working and nothing leaks from
one call to the next; what is saved is the interpreter's start-up. The sandbox of reference/worker/sandbox/process.py
holds for warm calls too: the fork server lives inside the function's bubblewrap sandbox, as its
uid, and each call it forks enters a cgroup of the call (memory and pids limits for all of the
call's processes) before running any code; at the end of the call the worker kills that cgroup
whole. The worker never acts on a pid the fork server reports: a call is killed through its
cgroup, or (without cgroups) with the whole fork server.
"""

import hashlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections import OrderedDict
from itertools import count

from reference.functions.languages import LANGUAGES
from reference.wire.jobs import Outcome
from reference.worker.capture import Capture, input_fd
from reference.worker.capture import ms as _ms
from reference.worker.sandbox import process
from reference.worker.sandbox.scratch import call_prefix

log = logging.getLogger(__name__)

WARM_PER_RUNTIME = 4        # warm processes per runtime and worker, least recently used closed first
WARM_MAX_AGE_S = 600.0      # an older warm process is replaced at its next call
START_TIMEOUT_S = 10.0      # for a fork server to compile its function, or to fork a call
SERVER_PIDS_MAX = 16        # a fork server and the call it is forking
HELPERS_INSIDE = "/run/minifaas"    # where a sandbox sees our helper scripts
CALLS_INSIDE = "/calls"     # a fork server's tmpfs for its calls' directories (made and removed by it)
CALLS_TMPFS_BYTES = 256 << 20
STATUS_OFFSET_MAX = 4096    # warm_php.php reads php's exit status within the first 4 KiB of executor_globals
_numbers = count(1)         # names of cgroups for warm processes, unique in the worker


class WarmProcessLost(Exception):
    """The warm process died or stopped answering (a function may kill its own fork server when
    there is no sandbox; in one, the fork server is the init of the pid namespace and its calls
    cannot signal it)."""

    timed_out = False


class WarmProcessSilent(WarmProcessLost):
    """The warm process did not answer in time (it may still be alive)."""

    timed_out = True


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


def _private_dir(parent, prefix, owner):
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    if owner:
        os.chown(path, *owner)
    return path


def _helper_inside(runtime, helper):
    """The helper's path as the interpreter sees it, and the read-only binds that make it so."""
    if not runtime.sandboxed:
        return helper, ()
    inside = os.path.join(HELPERS_INSIDE, os.path.basename(helper))
    return inside, ((helper, inside),)


class CallDirs:
    """A runtime's call directories, recycled: making one and removing it cost about 0.16 ms of
    CPU a call on ext4. A call that left its directory exactly as it was made (empty, same owner,
    mode 0700, no extended attributes) hands it on under a new random name, so a name a call has
    seen is gone when it ends, as before; any other is removed."""

    def __init__(self, runtime):
        self.runtime, self.spare = runtime, None

    def take(self, parent, owner):
        """A fresh call directory in `parent` (root's: a call cannot make entries there),
        belonging to `owner`."""
        path, self.spare = self.spare, None
        if path is not None:
            renamed = os.path.join(parent, call_prefix() + secrets.token_hex(6))
            try:
                os.rename(path, renamed)
                os.lchown(renamed, *(owner or (os.geteuid(), os.getegid())))
                return renamed
            except OSError:
                shutil.rmtree(path, ignore_errors=True)
                shutil.rmtree(renamed, ignore_errors=True)
        return _private_dir(parent, call_prefix(), owner)

    def give_back(self, path, owner):
        if self.spare is None and self._as_made(path, owner):
            renamed = os.path.join(self.runtime.scratch, call_prefix() + secrets.token_hex(6))
            try:
                os.rename(path, renamed)
                self.spare = renamed
                return
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)

    def _as_made(self, path, owner):
        try:
            st = os.lstat(path)
            owner = owner or (os.geteuid(), os.getegid())
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


# --- Python and PHP: a fork server per function -----------------------------------------------

class ForkServer:
    """An interpreter running the runtime's helper (warm_python.py, warm_php.php) for one
    function: started once, a forked child per call. It runs as the sandbox user with the
    function's rlimits (but CPU, set per call)."""

    def __init__(self, runtime, job, helper):
        self.fn_id, self.memory_mb, self.born = job.fn_id, job.memory_mb, time.monotonic()
        self.name = "the %s fork server" % runtime.lang
        self.make_dirs = runtime.sandboxed      # in its tmpfs it makes (and removes) each call's directory
        self.proc, self.group = None, None
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            inside, ro_binds = _helper_inside(runtime, helper)
            sandbox = None
            if runtime.sandboxed:
                # Its calls' directories live in a tmpfs of its own (charged to each call's
                # cgroup, gone with the sandbox): the worker never touches them. It is the init
                # of its pid namespace (no bwrap reaper): its calls die with it, and cannot
                # kill or stop it (the helpers' docstrings).
                sandbox = dict(ro_binds=ro_binds, chdir=CALLS_INSIDE,
                               extra=["--as-pid-1", "--perms", "0711", "--size", str(CALLS_TMPFS_BYTES),
                                      "--tmpfs", CALLS_INSIDE])
            if runtime.cgroups is not None:
                self.group = runtime.cgroups.group("srv-%d" % next(_numbers))
            # The source goes in on stdin, opened here: the sandbox user may not read fn_dir.
            with open(os.path.join(job.fn_dir, "code." + LANGUAGES[runtime.lang].ext), "rb") as source:
                # In a sandbox its parent is bwrap, not the worker: it dies with the worker
                # through --die-with-parent instead of checking its parent's pid ("0").
                argv = runtime.server_argv(job, inside) + [
                    str(theirs.fileno()), "0" if runtime.sandboxed else str(os.getpid()),
                    "sandbox" if runtime.sandboxed else "plain"] + runtime.server_options()
                # Its stderr is its own only until the first call: it says why a start failed.
                # Its directory is the scratch root, which it may enter but not list or write:
                # a killed worker leaves nothing of its fork servers behind.
                self.proc = runtime.spawn(argv, job, runtime.scratch, stdin=source, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, cpu=False, pass_fds=(theirs.fileno(),),
                                          group=self.group, pids=SERVER_PIDS_MAX, sandbox=sandbox,
                                          helper=True)
            process.own_children.add(self.proc.pid)
            theirs.close()
            self.ready = self.receive(START_TIMEOUT_S)     # said before any call's code ran
        except WarmProcessLost:
            theirs.close()
            self._kill()
            text = self.proc.stderr.read().decode(errors="replace").strip()
            self.close()
            raise WarmProcessLost(text or "%s did not start" % self.name) from None
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
        except socket.timeout:
            raise WarmProcessSilent("%s did not answer in %.1f s" % (self.name, timeout)) from None
        except OSError as exc:
            raise WarmProcessLost("%s did not answer: %s" % (self.name, exc)) from None
        if not data:
            raise WarmProcessLost("%s is gone" % self.name)
        try:
            return json.loads(data)
        except ValueError:
            raise WarmProcessLost("%s sent %.100r, not JSON" % (self.name, data)) from None

    def status(self, timeout):
        """The exit status of the call forked last, when the fork server reports its end. It
        runs the function's sandbox, so anything but {"status": int} ends it (WarmProcessLost)."""
        message = self.receive(timeout)
        status = message.get("status") if isinstance(message, dict) else None
        if type(status) is not int:
            raise WarmProcessLost("%s sent %.100r instead of a call's status" % (self.name, message))
        return status

    def fork(self, call_dir, cpu, fds, join=()):
        """Start one call with these stdin, stdout, stderr; its process first writes "0" into
        each of `join` (a cgroup's cgroup.procs) to enter the call's cgroup. What the fork
        server answers is its status once the call ended (`receive`): no pid, nothing to act on."""
        try:
            socket.send_fds(self.sock, [json.dumps({"dir": call_dir, "cpu": cpu, "join": len(join),
                                                    "make": self.make_dirs}).encode()],
                            list(fds) + list(join))
        except OSError as exc:
            raise WarmProcessLost("%s is gone: %s" % (self.name, exc)) from None

    def _kill(self):
        # Its sandbox whole (it is its pid namespace's init: its calls go with it), or its session.
        if self.group is not None:
            process.end_sandbox(self.proc, self.group)
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
        if self.group is not None:
            self.group.destroy()
            self.group = None
        process.reap_zombies()


class ForkServerRuntime:
    """A script runtime served by a fork server per function (mixed into its ProcessRuntime): a
    fork per call instead of an interpreter start. The fork server is replaced after any call
    that ended in an error."""

    helper_name = None

    def __init__(self, scratch):
        super().__init__(scratch)
        self.helper = _helper(scratch, self.helper_name)
        self.pool = WarmPool()
        self.dirs = CallDirs(self)
        # One call at a time per worker: one cgroup for every warm call, emptied after each.
        self.call_group = self.cgroups.group("%s-call" % self.lang) if self.cgroups is not None else None

    def server_argv(self, job, helper):
        """The fork server's command line, before the arguments of the helpers' protocol."""
        raise NotImplementedError

    def server_options(self):
        """Arguments after the protocol's (none but PHP's)."""
        return []

    def started(self, server):
        """A new fork server said it is ready (what it said is server.ready)."""

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
                self.started(server)
            except WarmProcessLost as exc:
                return self._failed_start(job, str(exc))
        keep = False
        owner = self.owner(job)
        if self.sandboxed:
            call_dir, inside = None, os.path.join(CALLS_INSIDE, call_prefix() + secrets.token_hex(6))
        else:
            call_dir = inside = self.dirs.take(self.scratch, owner)
        try:
            out = self._call(server, job, inside, started)
            out.stderr = out.stderr.replace(inside.encode() + b"/", b"")
            keep = out.error is None
        finally:
            if call_dir is not None:
                self.dirs.give_back(call_dir, owner)
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
        if self.call_group is not None:
            self.call_group.destroy()
        super().close()

    def _failed_start(self, job, text):
        if any(word.decode() in text for word in self.memory_words + process.LOADER_MEMORY_WORDS):
            return Outcome(exit_code=1, error="memory", cold=True,
                           message="the function ran out of its %d MiB of memory" % job.memory_mb)
        return Outcome(exit_code=1, error="runtime", cold=True,
                       message="%s could not start: %s" % (self.lang, (text.splitlines() or ["?"])[-1]))

    def _call(self, server, job, inside, started):
        # The call writes its stdout and stderr into memory files, not pipes: the worker is not
        # woken for every write and end of file, only by the fork server's two reports.
        out_fd, err_fd = os.memfd_create("stdout", os.MFD_CLOEXEC), os.memfd_create("stderr", os.MFD_CLOEXEC)
        group, join, watch = self.call_group, [], None
        oom = False
        try:
            if group is not None:
                group.limit(job.memory_mb << 20, process.CALL_PIDS_MAX)
                join = group.kept_join_fds()     # the group's own, opened once: not closed here
                watch = group.oom_watch()        # before the call starts: its strikes count
            with input_fd(job.input) as stdin:
                server.fork(inside, self.cpu_seconds(job), [stdin, out_fd, err_fd], join)
            init_ms = _ms(started)
            run_started = time.perf_counter()
            code, timed_out = self._wait_call(server, job, watch)
            if group is not None:
                group.kill()    # whatever the call left running, as the kernel lists it
                oom = group.ran_out_of_memory()
            # Read only now: nothing of the call is left to write into them.
            stdout, stderr = _captured(out_fd, job.output_limit), _captured(err_fd, job.output_limit)
        except WarmProcessLost as exc:
            if group is not None:
                group.kill()
            process.kill_strays()
            return Outcome(exit_code=1, error="runtime", message="the function's interpreter was lost: %s" % exc)
        finally:
            os.close(out_fd)
            os.close(err_fd)
        return self.outcome(job, stdout, stderr, code, timed_out, init_ms, run_started, oom)

    def _wait_call(self, server, job, watch=None):
        """Wait for the fork server's report of the call's end until the deadline, where the
        call's cgroup is killed (without cgroups: the whole fork server, whose calls die with it).
        Returns (exit code, timed out). Where the kernel says the call's cgroup ran out of
        memory (its watch), the call is over its memory_mb: it is ended then."""
        timeout = job.timeout_ms / 1000
        try:
            if watch is not None:
                ready = select.select([server.sock, watch], [], [], timeout)[0]
                if not ready:
                    raise WarmProcessSilent("the call ran to its deadline")
                if ready == [watch]:
                    self.call_group.kill()
                    return server.status(START_TIMEOUT_S), False
                timeout = START_TIMEOUT_S   # the report is there (or the socket closed)
            return server.status(timeout), False
        except WarmProcessLost as exc:
            if not exc.timed_out or server.proc.poll() is not None:
                raise
        if self.call_group is None:
            server.close()      # its calls die with it (PR_SET_PDEATHSIG), their strays are ours
            process.kill_strays()
            return -signal.SIGKILL, True
        self.call_group.kill()
        return server.status(START_TIMEOUT_S), True


class WarmPythonRuntime(ForkServerRuntime, process.PythonRuntime):
    helper_name = "warm_python.py"

    def server_argv(self, job, helper):
        return [self.interpreter, "-I", "-B", helper]


class WarmPhpRuntime(ForkServerRuntime, process.PhpRuntime):
    """php forks through pcntl; the descriptors of a call are received and put in place through
    FFI (loaded for the fork server only, so the function can use FFI too when warm: in the
    sandbox that reaches nothing a binary from /usr could not)."""

    helper_name = "warm_php.php"
    status_offset = None    # where php keeps its exit status, as the first fork server found it

    def server_argv(self, job, helper):
        return [self.interpreter, "-n", "-d", "extension=ffi", "-d", "memory_limit=%dM" % job.memory_mb,
                "-d", "display_errors=stderr", helper]

    def server_options(self):
        # Found once per worker (two probe forks, about 15 ms of a first call), then handed to
        # the next fork servers of every function: the same php binary keeps it at the same place.
        return [] if self.status_offset is None else [str(self.status_offset)]

    def started(self, server):
        # Learnt from a fork server before any function's code ran in it, and checked to be a
        # place inside executor_globals, so another function cannot steer what a server reads.
        offset = server.ready.get("status_offset")
        if self.status_offset is None and type(offset) is int and 0 <= offset < STATUS_OFFSET_MAX and offset % 4 == 0:
            self.status_offset = offset


# --- node: an interpreter started one call ahead -----------------------------------------------

class Spare:
    """An interpreter started before its call, with its call directory and limits, paused by a
    preloaded helper until `go` (a byte on a pipe); its stdin is a file filled in at `go`."""

    def __init__(self, runtime, job, helper):
        self.fn_id, self.born = job.fn_id, time.monotonic()
        self.limits = (job.memory_mb, job.timeout_ms)
        owner = runtime.owner(job)
        # In a sandbox its directory is in the sandbox's own tmpfs, the code copied in by bwrap.
        self.call_dir = None if runtime.sandboxed else _private_dir(runtime.scratch, call_prefix(), owner)
        self.inside = process.CALL_DIR if runtime.sandboxed else self.call_dir
        self.stdin = tempfile.TemporaryFile()
        self.proc, self.go_w = None, None
        # Its own cgroup: the next call's interpreter starts while this one's call runs.
        self.group = runtime.cgroups.group("spare-%d" % next(_numbers)) if runtime.cgroups is not None else None
        go_r = code = None
        try:
            helper_inside, ro_binds = _helper_inside(runtime, helper)
            sandbox, pass_fds = None, ()
            if runtime.sandboxed:
                code = runtime.code_fd(job)
                sandbox = dict(ro_binds=ro_binds, extra=runtime.call_view(code), chdir=process.CALL_DIR)
                pass_fds = (code,)
            else:
                script = os.path.join(self.call_dir, "code." + runtime.ext)
                shutil.copyfile(os.path.join(job.fn_dir, "code." + runtime.ext), script)
                if owner:
                    os.chown(script, *owner)
            go_r, self.go_w = os.pipe()
            argv = runtime.warm_argv(job, os.path.join(self.inside, "code." + runtime.ext), helper_inside, go_r)
            self.proc = runtime.spawn(argv, job, self.call_dir, stdin=self.stdin, pass_fds=pass_fds + (go_r,),
                                      group=self.group, sandbox=sandbox, helper=True)
            process.own_children.add(self.proc.pid)
        except BaseException:
            self.close()
            raise
        finally:
            for fd in (go_r, code):
                if fd is not None:
                    os.close(fd)

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
                if self.group is not None:
                    process.end_sandbox(self.proc, self.group)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait()
            process.own_children.discard(self.proc.pid)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self.group is not None:
            self.group.destroy()
            self.group = None
        process.reap_zombies()
        self.stdin.close()
        if self.call_dir is not None:
            shutil.rmtree(self.call_dir, ignore_errors=True)


class SpareRuntime(process.ProcessRuntime):
    """A script runtime whose next interpreter is started while the current call runs, so a
    call only waits for start-up when none was ready (the first call, or other limits)."""

    helper_name = None

    def __init__(self, scratch):
        super().__init__(scratch)
        self.ext = LANGUAGES[self.lang].ext
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
            watch = spare.group.oom_watch() if spare.group is not None else None
            spare.go(job.input)
            init_ms = _ms(started)
            run_started = time.perf_counter()
            self._start_next(job)
            timed_out = self._collect(spare.proc, job, stdout, stderr, spare.group, watch)
            oom = spare.group is not None and spare.group.ran_out_of_memory()
            out = self.outcome(job, stdout, stderr, spare.proc.returncode, timed_out, init_ms, run_started, oom)
            out.stderr = out.stderr.replace(spare.inside.encode() + b"/", b"")
        finally:
            spare.close()
        out.cold = cold
        out.extra["runtime_pid"] = spare.pid
        return out

    def close(self):
        self.pool.close()
        super().close()

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


WARM_RUNTIMES = {"python": WarmPythonRuntime, "node": WarmNodeRuntime, "php": WarmPhpRuntime}
