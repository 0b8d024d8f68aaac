"""The gateway's ServerClient fails a call past its deadline (its sweeper, reference/gateway/
client.py), on a server that takes the frame and never answers, and answers the others."""

import socket
import threading

import pytest

from reference.gateway.client import ServerClient
from reference.wire import framing
from reference.wire.errors import Timeout


@pytest.fixture
def silent_server(tmp_path):
    """A UNIX socket server that reads frames and answers only those whose op is "echo"."""
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    conns = []

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conns.append(conn)
        frames = framing.FrameReader(conn)
        try:
            while True:
                header, body = frames.read_frame()
                if header.get("op") == "echo":
                    framing.send_all(conn, framing.encode({"req": header["req"], "echo": True}, body))
        except (EOFError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    listener.close()
    for conn in conns:
        conn.close()
    thread.join(5)


def test_a_call_without_an_answer_fails_at_its_deadline_and_others_still_answer(silent_server):
    client = ServerClient(silent_server)
    try:
        with pytest.raises(Timeout, match="no answer from the server within 0.6 s"):
            client.call({"op": "never"}, b"", timeout=0.6)
        header, body = client.call({"op": "echo"}, b"abc", timeout=5)
        assert header["echo"] is True and body == b"abc"
        assert client._awaited == {}        # the late call is forgotten, not left waiting
    finally:
        client.close()


def test_a_closed_client_used_again_still_keeps_deadlines(silent_server):
    client = ServerClient(silent_server)
    try:
        assert client.call({"op": "echo"}, b"x", timeout=5)[1] == b"x"
        client.close()
        # It connects again (the listener's backlog takes it; nothing reads it): the deadline holds.
        with pytest.raises(Timeout):
            client.call({"op": "never"}, b"", timeout=0.5)
    finally:
        client.close()
