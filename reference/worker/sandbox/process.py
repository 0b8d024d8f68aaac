"""Interpreted functions in a child process: node, python3 or php with an environment of PATH
and the function's own env and secrets only, and a private call directory. Where the machine
allows it (reference/worker/sandbox/isolation.py), in a bubblewrap sandbox as the function's own
uid, in a cgroup of its call that limits memory and pids for all its processes and is killed
whole at the end of the call; else (rlimits-only) as `nobody` with rlimits and its own process
group. Rlimits hold in both, as a second line."""

import logging
import math
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time

from reference.functions import toolchains
from reference.functions.languages import LANGUAGES
from reference.wire.jobs import Outcome
from reference.worker.capture import Capture, input_fd
from reference.worker.capture import ms as _ms
from reference.worker.sandbox import bwrap, isolation, seccomp
from reference.worker.sandbox.scratch import call_prefix

log = logging.getLogger(__name__)

KILL_GRACE_S = 1.0          # how long to drain pipes after the function's processes are killed
# What the dynamic loader says when the address-space limit is too small to even start.
LOADER_MEMORY_WORDS = (b"failed to map segment", b"Cannot allocate memory")
CALL_DIR = "/call"          # a sandboxed call's own directory: in the sandbox's tmpfs, not on the host's disk
CALL_PIDS_MAX = 128         # processes and threads of one call together (node alone has about 11)
# For a helper (a fork server, a spare, a resident): the names of the function's own variables,
# comma-separated. The helper keeps those and PATH, and drops this one and whatever the start
# added (bwrap's PWD, python3's LC_CTYPE of PEP 538) before any of the function's code runs.
ENV_NAMES = "MINIFAAS_ENV"


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
    """A script run by an interpreter in a child process: an environment of PATH and its own env
    and secrets only, private scratch directory, rlimits, its own process group, an unprivileged
    user when we are root."""

    lang = None
    memory_words = ()           # words in stderr that mean the interpreter ran out of memory
    script = None               # the name the call's copy of the code has (default: code.<ext>)

    def __init__(self, scratch):
        self.scratch = scratch
        self.sandboxed = isolation.sandboxed()
        self.cgroups = isolation.cgroups()
        if self.cgroups is not None:
            self.cgroups.sweep()    # the groups of workers killed mid-call
        isolation.warn_if_weak()
        # Without bubblewrap every function shares one unprivileged user (when we are root).
        self.user = None if self.sandboxed else _sandbox_user()
        tc = toolchains.find(self.lang)
        self.interpreter = tc.path if tc else None
        self.group = None           # the cgroup of cold calls, made at the first one

    def owner(self, job):
        """(uid, gid) a call's files and processes belong to: the function's own uid in the
        sandbox, the shared sandbox user without it, None when we are not root."""
        if self.sandboxed:
            uid = isolation.uid_for(job.fn_id)
            return uid, uid
        return self.user

    def argv(self, job, script):
        raise NotImplementedError

    def address_space(self, job):
        return job.memory_mb << 20

    def code_fd(self, job):
        """A descriptor of the function's code for bwrap to copy into the call's directory: the
        worker never writes a file the sandbox could then reach, nor removes one it made."""
        return os.open(os.path.join(job.fn_dir, "code." + LANGUAGES[self.lang].ext), os.O_RDONLY | os.O_CLOEXEC)

    def script_name(self):
        """What the call's copy of the code is named: tracebacks and messages show it."""
        return self.script or "code." + LANGUAGES[self.lang].ext

    def call_view(self, fd):
        """The bwrap arguments that make CALL_DIR (0700, the function's) holding its code from `fd`."""
        return ["--perms", "0700", "--dir", CALL_DIR, "--perms", "0600", "--file", str(fd),
                os.path.join(CALL_DIR, self.script_name())]

    def run(self, job):
        if self.interpreter is None:
            return Outcome(exit_code=1, error="runtime",
                           message="no %s interpreter on this server: %s" % (self.lang, toolchains.install_hint(self.lang)))
        if self.sandboxed:
            return self._run_sandboxed(job)
        started = time.perf_counter()
        call_dir = tempfile.mkdtemp(prefix=call_prefix(), dir=self.scratch)
        try:
            script = os.path.join(call_dir, self.script_name())
            shutil.copyfile(os.path.join(job.fn_dir, "code." + LANGUAGES[self.lang].ext), script)
            owner = self.owner(job)
            if owner:
                for path in (call_dir, script):
                    os.chown(path, *owner)
            if self.cgroups and self.group is None:
                self.group = self.cgroups.group("cold-%s" % self.lang)
            out = self._run_child(job, self.argv(job, script), call_dir, started, self.group)
            # Tracebacks name the script by its scratch path, which means nothing to the user.
            out.stderr = out.stderr.replace(call_dir.encode() + b"/", b"")
            return out
        finally:
            shutil.rmtree(call_dir, ignore_errors=True)

    def _run_sandboxed(self, job):
        started = time.perf_counter()
        if self.cgroups and self.group is None:
            self.group = self.cgroups.group("cold-%s" % self.lang)
        fd = self.code_fd(job)
        try:
            argv = self.argv(job, os.path.join(CALL_DIR, self.script_name()))
            out = self._run_child(job, argv, None, started, self.group,
                                  sandbox=dict(extra=self.call_view(fd), chdir=CALL_DIR), pass_fds=(fd,))
        finally:
            os.close(fd)
        out.stderr = out.stderr.replace(CALL_DIR.encode() + b"/", b"")
        return out

    def cpu_seconds(self, job):
        return math.ceil(job.timeout_ms / 1000) + 1

    def _preexec(self, job, cpu=True, join=()):
        """The rlimits, set in the child before exec, and its entry into the call's cgroup
        (`join`: descriptors of the group's cgroup.procs). A warm process that outlives calls
        gets no CPU limit of its own (cpu=False): each call's process sets it."""
        limits = [(resource.RLIMIT_AS, self.address_space(job)),
                  (resource.RLIMIT_FSIZE, 64 << 20), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256)]
        if cpu:
            limits.append((resource.RLIMIT_CPU, self.cpu_seconds(job)))
        if self.user or self.sandboxed:
            # Counted per user (threads too): a bound on a fork storm where no cgroup is.
            limits.append((resource.RLIMIT_NPROC, 512))

        def preexec():
            for fd in join:
                os.write(fd, b"0")
            for which, value in limits:
                resource.setrlimit(which, (value, value))
        return preexec

    def sandbox_argv(self, argv, job, seccomp_fd=None, ro_binds=(), extra=(), chdir="/"):
        """`argv` wrapped to run in bubblewrap as the function's uid, seeing the interpreter's
        own tree, read-only `ro_binds`, what `extra` makes (its call directory), from `chdir`."""
        return bwrap.argv(argv, self.owner(job)[0], ro_binds=ro_binds, chdir=chdir, extra=extra,
                          trees=[bwrap.tree_of(self.interpreter)], seccomp_fd=seccomp_fd)

    def spawn(self, argv, job, cwd, stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cpu=True, pass_fds=(),
              group=None, pids=CALL_PIDS_MAX, sandbox=None, helper=False):
        """Start the interpreter locked down: an environment of PATH and the function's own env
        and secrets (job.env), its own session (so its process
        group can be killed as one), the rlimits; sandboxed in bubblewrap as the function's uid
        where it can be (`sandbox`: the keywords of sandbox_argv), else in `cwd` as the shared
        sandbox user when we are root. With `group`, its processes are in that cgroup (limited
        to the job's memory and `pids`) from before exec. `helper`: the interpreter runs one of
        ours first, which is told which variables are the function's (ENV_NAMES)."""
        join, filter_fd = (), None
        if group is not None:
            group.limit(job.memory_mb << 20, pids)
            join = group.join_fds()
        try:
            user = {}
            if self.sandboxed:
                filter_fd = seccomp.fd()
                if filter_fd is not None:
                    pass_fds = tuple(pass_fds) + (filter_fd,)
                argv, cwd = self.sandbox_argv(argv, job, filter_fd, **(sandbox or {})), "/"
            elif self.user:
                user = dict(user=self.user[0], group=self.user[1], extra_groups=[])
            # The function's own env and secrets (job.env: never on a command line), and our PATH.
            env = dict(job.env or {}, PATH=bwrap.SANDBOX_PATH if self.sandboxed else "/usr/bin:/bin")
            if helper:
                env[ENV_NAMES] = ",".join(sorted(job.env or {}))
            return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
                                    start_new_session=True, preexec_fn=self._preexec(job, cpu, join),
                                    pass_fds=pass_fds, **user)
        finally:
            for fd in join:
                os.close(fd)
            if filter_fd is not None:
                os.close(filter_fd)

    def _run_child(self, job, argv, cwd, started, group=None, sandbox=None, pass_fds=()):
        stdout, stderr = Capture(job.output_limit), Capture(job.output_limit)
        with input_fd(job.input) as stdin:
            try:
                proc = self.spawn(argv, job, cwd, stdin, group=group, sandbox=sandbox, pass_fds=pass_fds)
            except OSError as exc:
                return Outcome(exit_code=1, error="runtime", message="could not start %s: %s" % (argv[0], exc))
            watch = group.oom_watch() if group is not None else None    # the limits are set: it is made
        init_ms = _ms(started)
        run_started = time.perf_counter()
        timed_out = self._collect(proc, job, stdout, stderr, group, watch)
        oom = group is not None and group.ran_out_of_memory()
        return self.outcome(job, stdout, stderr, proc.returncode, timed_out, init_ms, run_started, oom)

    def outcome(self, job, stdout, stderr, code, timed_out, init_ms, run_started, oom=False):
        """The Outcome of a finished call from its exit code (negative: killed by that signal;
        in bubblewrap, 128 + the signal) and whether the cgroup's OOM killer struck."""
        out = Outcome(stdout=stdout.value(), stderr=stderr.value(), truncated=stdout.truncated or stderr.truncated,
                      init_ms=init_ms, exec_ms=_ms(run_started))
        if self.sandboxed and code > 128 and code - 128 in (signal.SIGXCPU, signal.SIGKILL):
            code = 128 - code       # bwrap reports its command's death by signal as 128 + signal
        out.exit_code = code if code >= 0 else 128 - code
        # The kernel's OOM kill says more than the timeout it may have led to.
        if oom or (not timed_out and code != 0
                   and any(w in out.stderr for w in self.memory_words + LOADER_MEMORY_WORDS)):
            out.error = "memory"
            out.message = "the function ran out of its %d MiB of memory" % job.memory_mb
        elif timed_out or code == -signal.SIGXCPU:
            out.error = "timeout"
            out.message = "the function ran longer than its %d ms limit and was stopped" % job.timeout_ms
        elif code < 0:
            out.error = "runtime"
            out.message = "the function was killed by signal %s" % signal.Signals(-code).name
        return out

    def _collect(self, proc, job, stdout, stderr, group=None, watch=None):
        """Read both pipes until the deadline; True when it was reached. Afterwards the whole
        cgroup (or process group) and any escaped descendants are dead, and the child is reaped.
        `watch`: the group's OOM watch; once it fires the call is over its memory_mb and ended."""
        deadline = time.monotonic() + job.timeout_ms / 1000
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, stdout)
        sel.register(proc.stderr, selectors.EVENT_READ, stderr)
        pipes = 2
        if watch is not None:
            sel.register(watch, selectors.EVENT_READ, None)
        timed_out, exited_at, struck = False, None, False
        try:
            while pipes:
                now = time.monotonic()
                if exited_at is None and (proc.poll() is not None or struck):
                    # Whatever it left running still holds the pipes: end it, then drain a little.
                    _kill_tree(proc, group)
                    exited_at = now
                if exited_at is not None and now - exited_at > KILL_GRACE_S:
                    break
                if exited_at is None and now >= deadline:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=max(0.0, min(deadline - now, 0.05))):
                    if key.data is None:
                        sel.unregister(watch)   # left unread: ran_out_of_memory reads it
                        struck = True
                        continue
                    data = os.read(key.fd, 65536)
                    if data:
                        key.data.write(data)    # past the limit it is read and dropped, so the writer never blocks
                    else:
                        sel.unregister(key.fileobj)
                        pipes -= 1
        finally:
            sel.close()
            _kill_tree(proc, group)
            proc.stdout.close()
            proc.stderr.close()
        return timed_out

    def close(self):
        if self.group is not None:
            self.group.destroy()
            self.group = None
        if self.cgroups is not None:
            self.cgroups.release_worker()


def _kill_tree(proc, group=None):
    """Kill the call: its cgroup whole when it has one (frozen, then every member the kernel
    lists), else the child's process group; reap the child, then the descendants that left the
    group (setsid, double fork): as subreaper the worker inherits them once their parents die."""
    if group is not None:
        end_sandbox(proc, group)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    kill_strays()


OUTER_EXIT_S = 1.0          # for bwrap to notice its sandbox is dead and exit by itself


def end_sandbox(proc, group):
    """Kill everything in `group` but `proc` (our own child: the outer bwrap), let bwrap reap
    its pid 1 and exit, then kill whatever is left. Killing bwrap with the rest would leave its
    pid 1 to be re-parented to the worker (a subreaper) as a zombie a moment later."""
    if proc.poll() is None:
        group.kill(spare={proc.pid})
        try:
            proc.wait(timeout=OUTER_EXIT_S)
        except subprocess.TimeoutExpired:
            pass
    group.kill()


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


def reap_zombies():
    """Reap children of ours that have ended and are no warm process we keep: bwrap's own
    intermediate processes, re-parented to the worker when a sandbox is killed whole. Never
    touches a live process, so it is safe while another call runs."""
    for pid in _stray_children(zombies_only=True):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


# Pids of the warm interpreters this worker keeps between calls (reference/worker/warm/runtimes.py): children
# of ours, but not strays.
own_children = set()


def _stray_children(zombies_only=False):
    """Pids of our child processes: in a worker each one is left over from the call that just
    ended (a worker keeps no other child of its own but its warm interpreters)."""
    found = []
    for pid in _children():
        if pid in own_children:
            continue
        if zombies_only and _state(pid) != "Z":
            continue
        found.append(pid)
    return found


def _children():
    """Our children's pids, from each of our threads' /proc/self/task/TID/children (a child is
    listed under the thread that forked it, or took it in as subreaper): a few small reads,
    where the scan of every /proc/PID/stat it replaces cost about 1.2 ms with 95 processes on
    the machine (4 ms during the test suite), several times a node call. The kernel lists
    children as they are at the read: one forked or ended meanwhile may be missed, which the
    callers' rounds (kill_strays) and the cgroup kill before them cover. Without the files
    (a kernel without CONFIG_PROC_CHILDREN), the scan."""
    pids = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % tid, "rb") as f:
                pids += map(int, f.read().split())
    except FileNotFoundError:
        return _children_by_scan()
    return pids


def _children_by_scan():
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None and int(fields[1]) == me:
            found.append(int(entry))
    return found


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (state first, then the parent's
    pid), or None when the process is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return stat[stat.rfind(")") + 2:].split()


def _state(pid):
    fields = _stat_fields(pid)
    return fields[0] if fields else None


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
    # Not code.py: that is a module of the standard library (tracebacks of the warm path showed
    # its lines), and the name the deploy's syntax check and the warm path use too.
    script = "function.py"

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
