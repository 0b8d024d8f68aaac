"""What the worker's own fork per spawn costs, in a process with the worker's imports and engine:
subprocess.Popen with a preexec_fn (which makes it fork), without one (vfork), and through a
`sh` + `prlimit` trampoline that would set the rlimits after a vfork instead.

    python tests/bench/spawn_cost.py [SPAWNS]

Prints, per round, the CPU microseconds a spawn of /bin/true costs this process and its
children. docs/PERFORMANCE.md ("A fifth look", where a fresh node call's time goes) has them.
"""

import os
import resource
import subprocess
import sys

from rusage import cpu_seconds as cpu

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from reference.worker.runtimes import WorkerRuntimes  # noqa: E402
from reference.worker.wasm.engine import make_engine  # noqa: E402

TRAMPOLINE = ["/bin/sh", "-c", 'exec prlimit --nofile=256:256 --core=0:0 -- "$@"', "sh", "/bin/true"]


def per_spawn(argv, spawns, **options):
    itself, children = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    for _ in range(spawns):
        subprocess.Popen(argv, start_new_session=True, **options).wait()
    return (round((cpu(resource.RUSAGE_SELF) - itself) / spawns * 1e6),
            round((cpu(resource.RUSAGE_CHILDREN) - children) / spawns * 1e6))


def limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def main(spawns):
    runtimes, engine = WorkerRuntimes(), make_engine()   # what a worker holds while it spawns
    try:
        print("resident MiB", int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20)
        for _ in range(3):
            print("this process / its children, us a spawn: preexec_fn (fork) %s, none (vfork) %s, "
                  "sh + prlimit trampoline (vfork) %s" % (per_spawn(["/bin/true"], spawns, preexec_fn=limit),
                                                          per_spawn(["/bin/true"], spawns),
                                                          per_spawn(TRAMPOLINE, spawns)), flush=True)
    finally:
        runtimes.close()
        del engine


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
