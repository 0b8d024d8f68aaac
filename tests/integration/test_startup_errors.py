"""A component that cannot start says why once and `minifaas up` stops, instead of restarting
it six times with six tracebacks (issue 19)."""

import socket
import subprocess
import sys

from support import ROOT


def up(tmp_path, port, timeout=90):
    return subprocess.run([sys.executable, "-m", "reference", "up", "--workers", "1", "--port", str(port),
                           "--lb-sock", str(tmp_path / "lb.sock"), "--server-sock", str(tmp_path / "s.sock"),
                           "--functions", str(tmp_path / "functions")],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, start_new_session=True)


def test_a_port_in_use_stops_up_with_one_sentence_and_no_restart(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = up(tmp_path, port)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("cannot listen on 127.0.0.1:%d" % port) == 1, done.stderr
    assert "gateway could not start (exit code 2)" in done.stderr
    assert "restarting" not in done.stderr and "Traceback" not in done.stderr
    # Everything it started is stopped and its sockets are gone.
    assert not (tmp_path / "lb.sock").exists() and not (tmp_path / "s.sock").exists()


def test_a_server_socket_in_use_is_refused_with_exit_2(tmp_path):
    path = tmp_path / "s.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(path))
    holder.listen()
    try:
        done = subprocess.run([sys.executable, "-m", "reference", "server", "--workers", "1",
                               "--server-sock", str(path), "--lb-sock", str(tmp_path / "lb.sock")],
                              capture_output=True, text=True, timeout=60, start_new_session=True)
    finally:
        holder.close()
    assert done.returncode == 2
    assert "is in use by a running process" in done.stderr and "Traceback" not in done.stderr
