"""Where calls of interpreted functions get their private directories: a root per stack, a
directory per call named for its worker, swept when that worker is gone.

The machine's root, `$TMPDIR/minifaas-calls-<uid>` (0711), holds one directory per stack,
`stack-<server pid>-<its start time>` (0711), made by the server before it forks its workers
(`make_stack_root`) and removed when it stops (`remove_stack_root`); the workers learn it from
FAAS_SCRATCH_ROOT, which the server sets in its own environment for them to inherit. Two stacks
on one machine then never see nor sweep each other's call directories; a stack that was killed
leaves its directory behind, and the next stack to start on the machine removes it (its server
is gone: the pid with its start time names one process, whatever pid reuse does).
A runtime made without a stack (a test, a NATS worker host) uses the machine's root itself.
"""

import logging
import os
import shutil
import stat
import tempfile

log = logging.getLogger(__name__)

ENV = "FAAS_SCRATCH_ROOT"   # the stack's root, set by its server for the workers it forks
STACK_PREFIX = "stack-"


def call_prefix():
    """Call directories are named for the worker that made them, so one killed mid-call (or with
    interpreters started ahead, reference/worker/warm/runtimes.py) has its leftovers swept by the next worker."""
    return "call-%d-" % os.getpid()


def sweep(scratch):
    """Remove the call directories of workers that are gone, in this root only."""
    for entry in os.listdir(scratch):
        parts = entry.split("-")
        if len(parts) >= 3 and parts[0] == "call" and parts[1].isdigit() and not os.path.exists("/proc/" + parts[1]):
            shutil.rmtree(os.path.join(scratch, entry), ignore_errors=True)


def _ours(path):
    """A real directory (not a symlink) owned by us: someone else's, in a shared /tmp, is not
    to be trusted."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _private():
    path = tempfile.mkdtemp(prefix="minifaas-calls-")
    os.chmod(path, 0o711)
    return path


def machine_root():
    """The machine's root for this user, or None when the name is taken by someone else (or a
    symlink). 0711: the sandbox user may enter its own call directory (random name) but list none."""
    path = os.path.join(tempfile.gettempdir(), "minifaas-calls-%d" % os.geteuid())
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        pass
    if not _ours(path):
        log.warning("%s is not ours; using a private scratch directory", path)
        return None
    os.chmod(path, 0o711)
    return path


def root():
    """The directory that holds every call's private directory, for a worker: its stack's root
    (FAAS_SCRATCH_ROOT) when it has one, else the machine's root (else a private one)."""
    given = os.environ.get(ENV)
    if given:
        if _ours(given):
            return given
        log.warning("%s=%s is not a directory of ours; using the machine's scratch root", ENV, given)
    return machine_root() or _private()


def _start_time(pid):
    """The start time of a live process (/proc/PID/stat field 22, clock ticks since boot), or
    None when it is gone or a zombie: with the pid it names one process, whatever pid reuse does."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def stack_name(pid):
    return "%s%d-%s" % (STACK_PREFIX, pid, _start_time(pid))


def _stack_gone(entry):
    if not entry.startswith(STACK_PREFIX):
        return False
    parts = entry[len(STACK_PREFIX):].split("-")
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    return _start_time(int(parts[0])) != parts[1]


def sweep_stacks(base):
    """Remove the roots of stacks whose server is gone (killed before it could remove its own)."""
    for entry in os.listdir(base):
        if _stack_gone(entry):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


def make_stack_root():
    """The calling server's own root (made 0711, empty), exported in FAAS_SCRATCH_ROOT for the
    workers it forks next. Call once, before forking; `remove_stack_root` when the stack stops."""
    base = machine_root()
    if base is None:
        path = _private()
    else:
        sweep_stacks(base)
        path = os.path.join(base, stack_name(os.getpid()))
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            if not _ours(path):
                raise
        os.chmod(path, 0o711)
    os.environ[ENV] = path
    return path


def remove_stack_root(path):
    """Remove a stack's root and all in it, once its workers are gone (never through a symlink)."""
    if os.environ.get(ENV) == path:
        del os.environ[ENV]
    if _ours(path):
        shutil.rmtree(path, ignore_errors=True)
