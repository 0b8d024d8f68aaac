"""A warm python3 for one function (a fork server), run by reference/worker/warm/runtimes.py inside the function's
sandbox, as its uid: it compiles the function once, then forks a fresh child per call that runs it
as __main__. It is not dumpable (no process of its calls may ptrace it or read its memory).

Standalone on purpose: it runs under `python3 -I` from a copy in the scratch directory, where the
`reference` package is neither on the path nor necessarily readable.

Protocol over the SOCK_SEQPACKET socket whose fd is argv[1] (one JSON message per packet):
  zygote -> worker  {"ready": true}                 once the code is compiled
  worker -> zygote  {"dir": call_dir, "cpu": secs, "join": n}
                    + SCM_RIGHTS [stdin, stdout, stderr, n cgroup.procs descriptors]
  zygote -> worker  {"status": code}                when it ended: exit code, or -signal
The call's process writes "0" into each cgroup.procs descriptor (entering the call's cgroup)
before anything else. argv[2] is the worker's pid to check as parent ("0": none, in a sandbox);
argv[3] is "sandbox" when /tmp and /dev/shm are the sandbox's own, emptied after every call.
The function's source arrives on stdin (fd 0) at start-up, and the names of its own
variables in MINIFAAS_ENV (own_environment).

In a sandbox the fork server is the init of its pid namespace (bwrap --as-pid-1): its death
kills every call (the kernel empties the namespace), and its calls cannot signal it (an init
gets only the signals it handles from inside its namespace, and it handles none). Without a
sandbox each call asks for SIGKILL at its parent's death (PR_SET_PDEATHSIG) instead: through
ctypes, which costs a call about 35 page faults and 0.2 ms here: the init does without it.
"""

# Imported here so that calls find them loaded: the point of a warm interpreter.
import _signal
import atexit
import base64  # noqa: F401
import builtins
import collections  # noqa: F401
import ctypes
import datetime  # noqa: F401
import functools  # noqa: F401
import gc
import hashlib  # noqa: F401
import itertools  # noqa: F401
import json
import linecache
import math  # noqa: F401
import os
import random  # noqa: F401  (re-seeded in every forked child by random's own at-fork hook)
import re  # noqa: F401
import resource
import signal
import socket
import sys
import time
import traceback
import types

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
REAP_DEADLINE_S = 5.0   # the worker kills the call's cgroup anyway; this is the fallback's bound
PRIVATE_DIRS = ("/tmp", "/dev/shm")
MAX_FD = 256            # the worker's RLIMIT_NOFILE: every fd above stdio is closed in a call
# The name the function's code is compiled under, as reference/worker/sandbox/process.py names
# the cold path's script: not code.py, the standard library's module of that name, whose lines
# the built-in hook found on sys.path and showed in the user's traceback.
SCRIPT = "function.py"
ENV_NAMES = "MINIFAAS_ENV"  # reference/worker/sandbox/process.py's, the function's variable names

libc = ctypes.CDLL(None, use_errno=True)


def read_source():
    chunks = []
    while True:
        data = os.read(0, 1 << 16)
        if not data:
            break
        chunks.append(data)
    # The zygote's own stdin is done with; calls get theirs from the worker.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return b"".join(chunks)


def serve(sock, source, code, private, init):
    """Answer calls until the worker goes away. Returns only in a forked child, set up for its call.

    Between two forks it touches as little as it can: after a fork every page it writes is a
    copy-on-write fault, so its messages are decoded by json's scanner alone and its answers are
    formatted bytes (json.loads' and json.dumps' Python layers cost about 50 faults a call)."""
    scan = json.scanner.make_scanner(json.JSONDecoder())
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 65536, 16)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)             # the worker closed the socket: nothing more to serve
        call = scan(msg.decode(), 0)[0]
        if call.get("make"):
            try:
                os.mkdir(call["dir"], 0o700)    # in our own tmpfs: the worker never touches it
            except OSError:
                pass                            # the call reports it when it cannot enter it
        pid = os.fork()
        if pid == 0:
            sock.detach()           # its fd is closed below; the object must not close a reused one
            become_call(call, fds, init)
            return
        for fd in fds:
            os.close(fd)
        status = reap(pid)
        if call.get("make"):
            remove(call["dir"])
        if private:
            empty(PRIVATE_DIRS)
        sock.send(b'{"status": %d}' % status)


def reap(pid):
    """Wait for the call's process, then kill what it left: its group, and any descendant that
    left the group (as subreaper we inherit those once their parents die), reaping every zombie
    each round so that no number of them can outlast the loop. With no child left there is
    nothing to kill: whatever the call left of its session (its group included) descends from
    it, and as subreaper we are the parent of every one of those whose parent died."""
    _, status = os.waitpid(pid, 0)
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return os.waitstatus_to_exitcode(status)    # the usual case
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + REAP_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass                # reaped one that had ended
        except ChildProcessError:
            break                   # no child at all, the usual case: no need to scan /proc
        for stray in children():
            try:
                os.kill(stray, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)
    return os.waitstatus_to_exitcode(status)


def empty(dirs):
    """Remove everything a call left in the sandbox's private /tmp and /dev/shm (its processes
    are dead: nothing writes there any more). Same uid: a mode the call set is undone first."""
    for top in dirs:
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        for name in entries:
            remove(os.path.join(top, name))


def remove(path):
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat_is_dir(st.st_mode):
        try:
            os.chmod(path, 0o700)
            for name in os.listdir(path):
                remove(os.path.join(path, name))
            os.rmdir(path)
        except OSError:
            pass
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def stat_is_dir(mode):
    return (mode & 0o170000) == 0o040000


def children():
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == me:
            found.append(int(entry))
    return found


def become_call(call, fds, init):
    """In the forked child: into the call's cgroup first, then a process group of its own (what
    reap kills), the call's stdio, directory and CPU limit. `init`: the fork server is its pid
    namespace's init (its death ends the call, and its SIGINT was let go: the call gets
    python3's own back).

    A group, not a session: the fork server leads a session with no terminal (own_session), so
    a call has none to reach either, and the setsid() this did before made the kernel build a
    scheduler autogroup for every call and tear it down at its exit, about 0.25 ms of CPU a
    call on the machines measured (docs/PERFORMANCE.md, "A seventh look")."""
    joins, fds = fds[3:3 + call.get("join", 0)], fds[:3]
    for fd in joins:
        try:
            os.write(fd, b"0")
        except OSError as exc:
            os.write(fds[2], b"the call could not enter its cgroup: %s\n" % str(exc).encode())
            os._exit(125)
        os.close(fd)
    os.setpgid(0, 0)
    if init:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)    # plain ints: not signal.py's enums
    else:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, MAX_FD)
    os.chdir(call["dir"])
    resource.setrlimit(resource.RLIMIT_CPU, (call["cpu"], call["cpu"]))


def run_as_main(source, code, main):
    """Run the function as `python3 -I function.py` would: in `main`, a fresh __main__ made by
    the fork server (each call has its own copy of it), its own traceback, the exit status of
    SystemExit. Returns the exit status."""
    sys.modules["__main__"] = main
    sys.argv = [SCRIPT]
    try:
        exec(code if code is not None else compile(source, SCRIPT, "exec"), main.__dict__)
    except SystemExit as exc:
        return exit_status(exc.code)
    except BaseException as exc:
        # Leave out this frame: the user's traceback starts in their file, as with a plain
        # python3. The exception's own traceback is what gets printed (the hook's argument is
        # used only when it has none), so it is the one cut.
        exc.__traceback__ = exc.__traceback__.tb_next if exc.__traceback__ else None
        if sys.excepthook is sys.__excepthook__:
            # The built-in hook reads source lines from the file by name, which is not there;
            # the traceback module reads them from linecache (remember_lines).
            traceback.print_exception(exc)
        else:
            sys.excepthook(type(exc), exc, exc.__traceback__)     # the function's own hook
        return 1
    return 0


def remember_lines(source):
    """Put the source in linecache under SCRIPT: the file is nowhere the call can read it, and
    a traceback shows its lines from there (mtime None: never checked against a file)."""
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        text = source.decode("latin-1")     # lines shown as best we can; the code runs as compiled
    lines = text.splitlines(keepends=True)
    linecache.cache[SCRIPT] = (len(text), None, lines, SCRIPT)


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def finish(status):
    """End the call as the interpreter's exit would, without tearing the interpreter down (the
    process is thrown away; a full finalisation costs several times the fork)."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()    # wait for non-daemon threads, as exit does
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                status = status or 120              # what python3 exits with when flushing fails
    os._exit(status)


def own_environment():
    """Keep PATH and the function's own variables, which the worker names in ENV_NAMES; drop the
    rest, which the start added (bwrap's PWD, python3's LC_CTYPE): the contract's environment.
    `del` unsets them in the process too, so a program the function runs does not get them."""
    if ENV_NAMES not in os.environ:
        return                      # not started by a worker: leave it as it is
    keep = set(os.environ.pop(ENV_NAMES).split(",")) | {"PATH"}
    for name in set(os.environ) - keep:
        del os.environ[name]


def own_session():
    """Lead a session of our own, which has no controlling terminal: the worker starts us so
    (bwrap --new-session, or its own start_new_session), and this makes sure, once, since the
    calls' process groups live in it and must find no terminal there."""
    if os.getsid(0) != os.getpid():
        os.setsid()


def main():
    own_environment()
    own_session()
    sock = socket.socket(fileno=int(sys.argv[1]))
    # Die with the worker, even if it dies before the prctl (then we are already orphaned).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if sys.argv[2] != "0" and os.getppid() != int(sys.argv[2]):
        os._exit(0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    init = os.getpid() == 1
    if init:
        # python3's SIGINT handler would let a call raise KeyboardInterrupt in us; without a
        # handler, an init drops every signal sent from inside its namespace.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    source = read_source()
    remember_lines(source)
    try:
        code = compile(source, SCRIPT, "exec")
    except (SyntaxError, ValueError):
        code = None                 # each call reports it, as python3 function.py would
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = SCRIPT, builtins
    # Objects made so far stay put: forked calls then share their pages instead of copying them.
    gc.freeze()
    serve(sock, source, code, len(sys.argv) > 3 and sys.argv[3] == "sandbox", init)
    # Only the forked child gets here.
    finish(run_as_main(source, code, module))


if __name__ == "__main__":
    main()
