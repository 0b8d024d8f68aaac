"""What a fresh Python call costs through the fork server alone: warm_python.py started as the
worker starts it, but with no sandbox, no cgroup and no worker, driven over its socket one call
after another, the machine's CPU counted from /proc/stat (the fork server, its calls, the
kernel's work for both, and this driver's few syscalls).

    python3 fork_server_cost.py HELPER.py FUNCTION.py CALLS [ROUNDS]  ->  a JSON line a round

HELPER.py is a warm_python.py, so that two trees' fork servers can be set side by side in
alternated runs (docs/PERFORMANCE.md, "A seventh look"). Between fork_floor.py (a bare fork of
the same interpreter) and WorkerRuntimes.run (the whole worker path, sandbox included).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def main(helper, function, calls, rounds):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = subprocess.Popen(["/usr/bin/python3", "-I", "-B", helper, str(theirs.fileno()), "0"],
                              pass_fds=[theirs.fileno()], stdin=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    theirs.close()
    with open(function, "rb") as f:
        server.stdin.write(f.read())
    server.stdin.close()
    try:
        if not json.loads(ours.recv(4096)).get("ready"):
            sys.exit("the fork server did not start")
        with tempfile.TemporaryDirectory(prefix="fork-server-cost-") as call_dir:
            message = json.dumps({"dir": call_dir, "cpu": 10, "join": 0}).encode()
            _call(ours, message)            # the first call: out of the count
            for _ in range(rounds):
                before, started = _machine_cpu(), time.perf_counter()
                for _ in range(calls):
                    _call(ours, message)
                elapsed, cpu = time.perf_counter() - started, _machine_cpu() - before
                print(json.dumps({"calls": calls, "us_per_call": round(elapsed / calls * 1e6),
                                  "machine_cpu_us_per_call": round(cpu / calls * 1e6)}), flush=True)
    finally:
        ours.close()
        server.wait(timeout=10)


def _call(sock, message):
    """One call: its input on a pipe, stdout and stderr to memfds, as the worker passes them."""
    stdin, feed = os.pipe()
    os.write(feed, b'{"input": "x"}')
    os.close(feed)
    out, err = os.memfd_create("out"), os.memfd_create("err")
    try:
        socket.send_fds(sock, [message], [stdin, out, err])
        return sock.recv(4096)
    finally:
        for fd in (stdin, out, err):
            os.close(fd)


def _machine_cpu():
    """CPU seconds the whole machine spent, idle and iowait aside (the call's work is spread over
    processes that exit, and over the kernel)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 3)
