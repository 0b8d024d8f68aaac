"""The floor under a fresh Python call: what a bare fork costs an interpreter set up as the fork
server is, with nothing of the platform around it (no sandbox, no cgroup, no socket, no worker).

    python3 -I -B fork_floor.py HELPER_DIR FUNCTION.py CALLS  ->  prints {"calls", "us_per_call", "cpu_us_per_call"}

It imports reference/worker/warm/warm_python.py (its module-level imports are the fork server's
warm modules; its main() does not run), compiles the function, freezes the heap as main() does,
then forks CALLS children one after another, each running the function as __main__ with stdin
from an empty pipe and stdout to /dev/null before os._exit, reaped before the next fork. Run it
with the interpreter the worker runs functions with (reference.functions.toolchains.find("python")).
"""

import gc
import importlib
import json
import os
import resource
import sys
import time


def main(helper_dir, function, calls):
    sys.path.insert(0, helper_dir)
    importlib.import_module("warm_python")     # its imports: the fork server's warm modules
    del sys.path[0]
    with open(function, "rb") as f:
        code = compile(f.read(), "function.py", "exec")
    null = os.open(os.devnull, os.O_WRONLY)
    gc.freeze()
    before, started = _cpu(), time.perf_counter()
    failed = 0
    for _ in range(calls):
        stdin, feed = os.pipe()
        os.close(feed)              # an empty input: the function reads EOF
        pid = os.fork()
        if pid == 0:
            os.dup2(stdin, 0)
            os.dup2(null, 1)
            exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
            sys.stdout.flush()
            os._exit(0)
        os.close(stdin)
        failed += os.waitpid(pid, 0)[1] != 0
    elapsed, cpu = time.perf_counter() - started, _cpu() - before
    print(json.dumps({"calls": calls, "failed": failed, "us_per_call": elapsed / calls * 1e6,
                      "cpu_us_per_call": cpu / calls * 1e6}))


def _cpu():
    """CPU seconds of this process and its reaped children (the calls)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
