# An attacker: given other functions' pids, files and a loopback port (JSON on stdin), tries to
# ptrace, signal and read those processes, write those files and connect to the port, and
# lists every process it can see. Prints what it managed as JSON: a contained one manages nothing.
import ctypes
import json
import os
import signal
import socket
import sys

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
libc = ctypes.CDLL(None, use_errno=True)
task = json.loads(sys.stdin.read() or "{}")
got = {"ptrace": [], "signal": [], "read": [], "write": [], "connect": [], "visible": []}
for pid in task.get("pids", []):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0:
        got["ptrace"].append(pid)
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    for name in ("cmdline", "environ", "mem", "fd/1"):
        try:
            with open("/proc/%d/%s" % (pid, name), "rb") as f:
                f.read(64)
            got["read"].append("%d/%s" % (pid, name))
        except OSError:
            pass
    try:
        os.kill(pid, signal.SIGKILL)
        got["signal"].append(pid)
    except OSError:
        pass
for path in task.get("paths", []):
    try:
        with open(path, "ab") as f:
            f.write(b"\nprint('HIJACKED')\n")
        got["write"].append(path)
    except OSError:
        pass
for port in task.get("ports", []):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        got["connect"].append(port)
    except OSError:
        pass
me = os.getpid()
for entry in os.listdir("/proc"):
    if entry.isdigit() and int(entry) != me:
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                got["visible"].append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
print(json.dumps(got))
