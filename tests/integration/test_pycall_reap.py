"""The Python fork server's own end of a call (reference/worker/warm/warm_python.py), driven
over its protocol with no sandbox and no cgroup, so that nothing else kills what a call leaves:
the reported status of each way a call ends, and no process of a call outliving it, whether it
stayed in the call's group or left it for a session of its own.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

import pytest

HELPER = pathlib.Path(__file__).resolve().parents[2] / "reference" / "worker" / "warm" / "warm_python.py"

# Prints the pids of two `sleep 30`: one in the call's process group, one in a session of its own.
LEAVES_TWO = b"""\
import subprocess
kept = subprocess.Popen(["sleep", "30"])
gone = subprocess.Popen(["sleep", "30"], start_new_session=True)
print(kept.pid, gone.pid)
"""

# A grandchild whose parent exits first: re-parented to the fork server (its subreaper).
ORPHAN = b"""\
import os, subprocess
r, w = os.pipe()
if os.fork() == 0:
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    os.write(w, b"%d" % p.pid)
    os._exit(0)
os.close(w)
print(os.read(r, 32).decode())
"""


class Server:
    """warm_python.py serving one function's source."""

    def __init__(self, source):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        os.write(w, source)
        os.close(w)
        self.proc = subprocess.Popen([sys.executable, "-I", "-B", str(HELPER), str(theirs.fileno()),
                                      str(os.getpid()), "plain"], stdin=r, pass_fds=(theirs.fileno(),))
        os.close(r)
        theirs.close()
        self.sock.settimeout(20)
        assert json.loads(self.sock.recv(4096)) == {"ready": True}
        self.dir = tempfile.mkdtemp()

    def call(self, data=b""):
        """(status, stdout, stderr) of one call."""
        stdin, out, err = (os.memfd_create(n) for n in ("stdin", "stdout", "stderr"))
        try:
            os.write(stdin, data)
            os.lseek(stdin, 0, os.SEEK_SET)
            socket.send_fds(self.sock, [json.dumps({"dir": self.dir, "cpu": 10, "join": 0, "make": False}).encode()],
                            [stdin, out, err])
            status = json.loads(self.sock.recv(4096))["status"]
            return status, os.pread(out, 1 << 16, 0), os.pread(err, 1 << 16, 0)
        finally:
            for fd in (stdin, out, err):
                os.close(fd)

    def close(self):
        self.sock.close()
        self.proc.wait(timeout=20)
        os.rmdir(self.dir)


@pytest.fixture
def server(request):
    made = []

    def make(source):
        made.append(Server(source))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _alive(pid):
    """True while `pid` is a process that is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_what_a_call_leaves_in_its_group_or_out_of_it_dies_with_the_call(server):
    s = server(LEAVES_TWO)
    for _ in range(3):
        status, out, err = s.call()
        assert (status, err) == (0, b"")
        pids = [int(p) for p in out.split()]
        assert len(pids) == 2
        assert not any(_alive(p) for p in pids), out


def test_an_orphaned_grandchild_dies_with_the_call(server):
    s = server(ORPHAN)
    for _ in range(3):
        status, out, err = s.call()
        assert (status, err) == (0, b"")
        assert not _alive(int(out))


@pytest.mark.parametrize("source, status, stderr_has", [
    (b"print('ok')", 0, b""),
    (b"import sys; sys.exit(3)", 3, b""),
    (b"raise ValueError('boom')", 1, b"ValueError: boom"),
    (b"import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15, b""),
    (b"def f(:\n", 1, b"SyntaxError"),
])
def test_each_way_a_call_ends_is_reported_at_every_call(server, source, status, stderr_has):
    s = server(source)
    for _ in range(3):
        got, _, err = s.call()
        assert got == status, err
        assert stderr_has in err


def test_a_call_without_leftovers_keeps_the_server_serving(server):
    s = server(b"import sys; print(sys.stdin.read().upper())")
    assert [s.call(b"abc")[1] for _ in range(5)] == [b"ABC\n"] * 5
    assert s.proc.poll() is None
