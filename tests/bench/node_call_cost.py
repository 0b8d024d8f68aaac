"""Where a fresh node call's CPU goes: examples/add.js through WorkerRuntimes.run (as a worker
runs it, sandbox and all) against a bare `node code.js` with PATH alone, alternated.

    python tests/bench/node_call_cost.py [CALLS] [ROUNDS]

Prints a line per round: CPU ms a call through the platform (this process and its children),
of which this process's own, and a bare node's. Set FAAS_NO_BWRAP=1, FAAS_NO_SECCOMP=1 or
FAAS_NO_CGROUPS=1 to take one layer out. docs/PERFORMANCE.md ("A fifth look") has the figures.
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile

from benchpaths import EXAMPLES
from rusage import cpu_seconds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from reference.wire.jobs import Job  # noqa: E402
from reference.worker.runtimes import WorkerRuntimes  # noqa: E402

INPUT = b'{"a": 2, "b": 3}'


def cpu(children=True):
    return cpu_seconds(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else cpu_seconds()


def main(calls, rounds):
    scratch = tempfile.mkdtemp(prefix="node-cost-")
    fn_dir = os.path.join(scratch, "add_1")
    os.mkdir(fn_dir)
    shutil.copy(str(EXAMPLES / "add.js"), os.path.join(fn_dir, "code.js"))
    node = shutil.which("node")
    runtimes = WorkerRuntimes()
    job = Job(1, "add_1", fn_dir, "js", INPUT)
    try:
        assert runtimes.run(job).stdout == b'{"sum":5}\n'
        for _ in range(rounds):
            before, before_self = cpu(), cpu(children=False)
            for _ in range(calls):
                out = runtimes.run(job)
                assert (out.error, out.exit_code) == (None, 0), out.message
            platform, itself = (cpu() - before) / calls * 1e3, (cpu(children=False) - before_self) / calls * 1e3
            before = cpu()
            for _ in range(calls):
                subprocess.run([node, os.path.join(fn_dir, "code.js")], input=INPUT, capture_output=True, check=True,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            bare = (cpu() - before) / calls * 1e3
            print("through WorkerRuntimes.run: %.1f ms a call (this process itself: %.1f); a bare node: %.1f ms"
                  % (platform, itself, bare), flush=True)
    finally:
        runtimes.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
