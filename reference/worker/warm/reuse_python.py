"""A resident python3 for one function deployed with reuse=true, run by reference/worker/warm/reuse.py
inside the function's sandbox, as its uid: it compiles the function once, then runs it as
__main__ once per call, in the same namespace, so its globals and the modules it imported (and
what it set on them) are there at the next call.

Standalone on purpose: it runs under `python3 -I` from a copy in the scratch directory.

argv: the function's script, the go pipe's fd, the done pipe's fd. It writes "ready\n" on the
done pipe once started; then, for each byte read from the go pipe, it runs one call with the
stdin, stdout and stderr the worker prepared (fds 0, 1, 2, offsets at 0) and writes
"<exit status> <restart>\n": restart is 1 when the call left a thread running, whose output
could reach the next call (the worker then ends this interpreter).
"""

import builtins
import io
import os
import sys
import threading
import traceback
import types


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def fresh_stdin():
    """A new sys.stdin on fd 0 for each call: the last call's may have read to its end."""
    raw = io.FileIO(0, "rb", closefd=False)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(raw), encoding=sys.stdin.encoding,
                                                 errors=sys.stdin.errors)


def run(code, main, script):
    sys.argv = [script]
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    except SystemExit as exc:
        return exit_status(exc.code)
    except BaseException as exc:
        exc.__traceback__ = exc.__traceback__.tb_next if exc.__traceback__ else None
        if sys.excepthook is sys.__excepthook__:
            traceback.print_exception(exc)
        else:
            sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def finish_threads():
    """Wait for the call's non-daemon threads, as an exit would; True when a thread is left."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    return threading.active_count() > 1


def main():
    # The same environment as a fresh call's (warm_python.own_environment, not importable here).
    if "MINIFAAS_ENV" in os.environ:
        keep = set(os.environ.pop("MINIFAAS_ENV").split(",")) | {"PATH"}
        for name in set(os.environ) - keep:
            del os.environ[name]
    script, go, done = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.set_inheritable(go, False)
    os.set_inheritable(done, False)
    with open(script, "rb") as f:
        source = f.read()
    try:
        code = compile(source, os.path.basename(script), "exec")
    except (SyntaxError, ValueError) as exc:
        code = compile("raise %s(%r)" % (type(exc).__name__, str(exc)), os.path.basename(script), "exec")
    module = types.ModuleType("__main__")
    module.__file__, module.__builtins__ = os.path.basename(script), builtins
    os.write(done, b"ready\n")
    while os.read(go, 1):
        fresh_stdin()
        status = run(code, module, os.path.basename(script))
        left = finish_threads()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                status = status or 120
        os.write(done, b"%d %d\n" % (status, 1 if left else 0))
        if left:
            break
    os._exit(0)


if __name__ == "__main__":
    main()
