"""The real balancer process (`python -m reference balancer`), driven over its UNIX socket with
plain sockets and frames, as the server drives it."""

import collections
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from reference.wire import framing

START_DEADLINE_S = 30.0
ANSWER_DEADLINE_S = 10.0    # only so a missing answer fails the test instead of hanging it


class BalancerProcess:
    """One balancer in its own process group, its stderr in a file for failure messages."""

    def __init__(self, tmp_path, strategy, weights=None, sock_name="lb.sock"):
        self.path = str(tmp_path / sock_name)
        self.stderr_path = tmp_path / ("%s.%s.stderr" % (sock_name, strategy))
        self.command = [sys.executable, "-m", "reference", "balancer", "--strategy", strategy,
                        "--lb-sock", self.path]
        if weights:
            self.command += ["--weights", weights]
        self.proc = None

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("balancer exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
            try:
                connect(self.path).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("balancer did not listen on %s in time:\n%s" % (self.path, self.stderr()))

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        """SIGTERM the group, wait, SIGKILL what is left. Returns the exit code."""
        if self.proc is None:
            return None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()


@pytest.fixture
def start_balancer(tmp_path):
    started = []

    def start(strategy="RR", weights=None, sock_name="lb.sock"):
        balancer = BalancerProcess(tmp_path, strategy, weights, sock_name)
        started.append(balancer)
        return balancer.start()

    yield start
    for balancer in started:
        balancer.stop()


def connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ANSWER_DEADLINE_S)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def send(sock, *headers):
    sock.sendall(b"".join(framing.encode(h) for h in headers))


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("balancer closed the connection")
        data += chunk
    return data


def recv(sock):
    head_len, body_len = framing.PREFIX.unpack(recv_exactly(sock, framing.PREFIX.size))
    rest = recv_exactly(sock, head_len + body_len)
    return json.loads(rest[:head_len])


def register(sock, *workers):
    send(sock, {"op": "register", "workers": [{"id": w} for w in workers]})


def stats(sock, req=1):
    """Stats also serves as a barrier: the balancer answers frames of a connection in order,
    so anything it meant to send before this point has arrived when the stats answer does."""
    send(sock, {"op": "stats", "req": req})
    answer = recv(sock)
    assert answer["op"] == "stats" and answer["req"] == req, answer
    return answer


def submit(sock, job, fn="hello"):
    send(sock, {"op": "submit", "job": job, "fn": fn})


# -- scheduling over the wire ----------------------------------------------------------------

def test_rr_assigns_every_job_at_once_in_turn(start_balancer):
    balancer = start_balancer("RR")
    with connect(balancer.path) as sock:
        register(sock, 0, 1, 2)
        for job in range(5):
            submit(sock, job)
        assert [recv(sock) for _ in range(5)] == [
            {"op": "assign", "job": job, "worker": job % 3} for job in range(5)]
        answer = stats(sock)
        assert answer["strategy"] == "RR" and answer["queue"] == 0
        assert answer["workers"] == [{"id": 0, "outstanding": 2, "weight": 1},
                                     {"id": 1, "outstanding": 2, "weight": 1},
                                     {"id": 2, "outstanding": 1, "weight": 1}]


def test_fifo_holds_a_job_until_a_worker_is_done(start_balancer):
    balancer = start_balancer("FIFO")
    with connect(balancer.path) as sock:
        register(sock, 0, 1)
        for job in range(3):
            submit(sock, job)
        assert recv(sock) == {"op": "assign", "job": 0, "worker": 0}
        assert recv(sock) == {"op": "assign", "job": 1, "worker": 1}
        # Job 2 is held: the next thing on the wire is the stats answer, not an assign.
        answer = stats(sock)
        assert answer["strategy"] == "FIFO" and answer["queue"] == 1
        send(sock, {"op": "done", "job": 1, "worker": 1})
        assert recv(sock) == {"op": "assign", "job": 2, "worker": 1}
        assert stats(sock, req=2)["queue"] == 0


def test_many_jobs_in_flight_on_one_connection(start_balancer):
    balancer = start_balancer("FIFO")
    jobs = 300
    with connect(balancer.path) as sock:
        register(sock, "a", "b", "c")
        send(sock, *({"op": "submit", "job": job, "fn": "f"} for job in range(jobs)))
        running = {}
        for _ in range(3):
            answer = recv(sock)
            running[answer["worker"]] = answer["job"]
        assigned = sorted(running.values())
        # Finish jobs one at a time; each done hands out the oldest waiting job.
        while len(assigned) < jobs:
            worker = sorted(running)[len(assigned) % 3]
            send(sock, {"op": "done", "job": running[worker], "worker": worker})
            answer = recv(sock)
            assert answer["worker"] == worker
            assert answer["job"] == len(assigned)
            running[worker] = answer["job"]
            assigned.append(answer["job"])
        assert assigned == list(range(jobs))
        assert stats(sock)["queue"] == 0


def test_weights_from_the_command_line_apply_in_registration_order(start_balancer):
    balancer = start_balancer("WEIGHTED", weights="1,1,2,2")
    with connect(balancer.path) as sock:
        register(sock, 0, 1, 2, 3)
        for job in range(12):
            submit(sock, job)
        counts = collections.Counter(recv(sock)["worker"] for _ in range(12))
        assert counts == {0: 2, 1: 2, 2: 4, 3: 4}
        assert [w["weight"] for w in stats(sock)["workers"]] == [1, 1, 2, 2]


def test_submit_without_workers_is_rejected(start_balancer):
    balancer = start_balancer("FIFO")
    with connect(balancer.path) as sock:
        submit(sock, 7)
        assert recv(sock) == {"op": "reject", "job": 7, "error": "unavailable",
                              "message": "no worker available"}
        register(sock, 0)
        send(sock, {"op": "unregister", "workers": [0]})
        submit(sock, 8)
        assert recv(sock)["op"] == "reject"


def test_unknown_ops_and_bad_messages_are_ignored(start_balancer):
    balancer = start_balancer("RR")
    with connect(balancer.path) as sock:
        register(sock, 0)
        send(sock, {"op": "frobnicate"}, {"no_op": True}, {"op": "submit"}, {"op": "done"})
        submit(sock, 1)
        assert recv(sock) == {"op": "assign", "job": 1, "worker": 0}
    assert "frobnicate" in balancer.stderr()


def test_a_malformed_frame_closes_only_that_connection(start_balancer):
    balancer = start_balancer("RR")
    with connect(balancer.path) as good, connect(balancer.path) as bad:
        register(good, 0)
        bad.sendall(framing.PREFIX.pack(5, 0) + b"notjs")
        with pytest.raises(EOFError):
            recv(bad)
        submit(good, 1)
        assert recv(good) == {"op": "assign", "job": 1, "worker": 0}


def test_a_closed_connection_takes_its_workers_and_queued_jobs_along(start_balancer):
    balancer = start_balancer("FIFO")
    with connect(balancer.path) as first:
        register(first, 0)
        submit(first, 1)
        submit(first, 2)
        assert recv(first) == {"op": "assign", "job": 1, "worker": 0}
        assert stats(first)["queue"] == 1
    # A server that reconnects registers again and finds worker 0 free, nothing queued.
    with connect(balancer.path) as second:
        assert stats(second)["workers"] == []
        register(second, 0)
        submit(second, 1)
        assert recv(second) == {"op": "assign", "job": 1, "worker": 0}
        answer = stats(second)
        assert answer["queue"] == 0
        assert answer["workers"] == [{"id": 0, "outstanding": 1, "weight": 1}]


# -- the socket and the process --------------------------------------------------------------

def test_socket_is_private_and_removed_on_sigterm(start_balancer):
    balancer = start_balancer("RR")
    mode = os.stat(balancer.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert balancer.stop() == 0
    assert not os.path.exists(balancer.path)


def test_a_stale_socket_file_is_replaced(tmp_path, start_balancer):
    # What a balancer killed with SIGKILL leaves behind: a socket file nobody listens on.
    path = str(tmp_path / "lb.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()
    balancer = start_balancer("RR")
    with connect(balancer.path) as sock:
        register(sock, 0)
        submit(sock, 1)
        assert recv(sock)["worker"] == 0


def test_a_second_balancer_on_a_live_socket_refuses_to_start(tmp_path, start_balancer):
    first = start_balancer("RR")
    second = subprocess.run([sys.executable, "-m", "reference", "balancer", "--strategy", "FIFO",
                             "--lb-sock", first.path], capture_output=True, text=True, timeout=60,
                            start_new_session=True)
    assert second.returncode == 1
    assert "already listening" in second.stderr
    # The first one still owns its socket and answers.
    with connect(first.path) as sock:
        assert stats(sock)["strategy"] == "RR"


def test_an_unknown_strategy_is_refused_with_the_known_names(tmp_path):
    result = subprocess.run([sys.executable, "-m", "reference", "balancer", "--strategy", "RANDOM",
                             "--lb-sock", str(tmp_path / "lb.sock")],
                            capture_output=True, text=True, timeout=60, start_new_session=True)
    assert result.returncode == 2
    assert "RANDOM" in result.stderr and "FIFO" in result.stderr and "WEIGHTED" in result.stderr
    assert not os.path.exists(tmp_path / "lb.sock")


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_server_that_never_reads_its_answers_is_not_buffered_without_bound(start_balancer):
    """A hostile (or stuck) server sends stats requests as fast as it can and reads nothing:
    the balancer stops reading it once its answers back up (Session.pause_writing), so the
    sender is held by the socket instead of the balancer's memory growing; another connection
    is served meanwhile; once the answers are read, every one arrives, in order."""
    balancer = start_balancer("RR")
    request = framing.encode({"op": "stats", "req": 0})
    batch = request * 4096
    rss_before = _rss_kib(balancer.proc.pid)
    with connect(balancer.path) as flooder, connect(balancer.path) as other:
        register(flooder, 0, 1)
        flooder.setblocking(False)
        sent, stalled_since = 0, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                sent += flooder.send(batch[sent % len(batch):])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break           # held: the balancer has stopped reading us
                time.sleep(0.01)
        assert stalled_since is not None, "sent %d bytes and the balancer kept reading" % sent
        assert sent < 64 << 20, sent  # a few socket buffers' worth, not whatever we could push
        assert stats(other, req=7)["req"] == 7    # the other connection is not held up
        grown_kib = _rss_kib(balancer.proc.pid) - rss_before
        assert grown_kib < 64 * 1024, grown_kib
        # Now read: every whole request sent is answered, in order; then the one the flood cut
        # in the middle, finished, and the connection serves on.
        flooder.settimeout(ANSWER_DEADLINE_S)
        for i in range(sent // len(request)):
            answer = recv(flooder)
            assert answer["op"] == "stats" and answer["req"] == 0, (i, answer)
        cut = sent % len(request)
        if cut:
            flooder.sendall(request[cut:])
            assert recv(flooder)["req"] == 0
        assert stats(flooder, req=9)["req"] == 9
