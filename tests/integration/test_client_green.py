"""The gateway's ServerClient as the gateway runs it: in a gevent-patched process, where its
reader thread and sweeper are greenlets and its calls wait on gevent's Event. A hostile server
in this process holds answers and sends them back in reverse, never answers, hangs up with
calls waiting, or sends a frame too large; the client runs in a child process patched as
`minifaas gateway` is, and says what each of its calls got."""

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from support import ROOT

from reference.wire import framing

CLIENT = textwrap.dedent("""
    import gevent.monkey
    gevent.monkey.patch_all()
    import json, sys
    import gevent
    from reference.gateway.client import ServerClient
    from reference.wire.errors import FaasError

    def outcome(op, timeout=5.0, n=0, body=None):
        try:
            return client.call({"op": op, "n": n}, body or str(n).encode(), timeout)[1].decode()[:20]
        except FaasError as exc:
            return "%s: %s" % (type(exc).__name__, exc.message)

    client = ServerClient(sys.argv[1])
    seen = {"green": gevent.monkey.is_module_patched("threading")}
    # 30 calls waiting at once, answered in reverse order once the server is told to.
    held = [gevent.spawn(outcome, "later", 5.0, i) for i in range(30)]
    gevent.sleep(0.3)
    seen["flush"] = outcome("flush")
    seen["held"] = [g.get() for g in held]
    # A call never answered fails at its deadline; the connection serves on.
    seen["never"] = outcome("never", 0.5)
    seen["echo"] = outcome("echo", 5.0, 7)
    # An answer that comes in pieces (each a short read) with another call's whole answer
    # behind it: both reach their callers.
    dripped = gevent.spawn(outcome, "drip", 5.0, 12)
    gevent.sleep(0.05)
    seen["behind"] = outcome("echo", 5.0, 13)
    seen["drip"] = dripped.get()
    # The server hangs up with three calls waiting: all three fail at once; the next connects again.
    waiting = [gevent.spawn(outcome, "never", 30.0, i) for i in range(3)]
    gevent.sleep(0.2)
    seen["hangup"] = outcome("hangup", 30.0)
    seen["waiting"] = [g.get() for g in waiting]
    seen["again"] = outcome("echo", 5.0, 8)
    # A frame too large: the calls on that connection fail, the next one connects again.
    seen["huge"] = outcome("huge", 30.0)
    seen["after_huge"] = outcome("echo", 5.0, 9)
    # The server stops reading, then hangs up, while a call's send of 8 MB waits for room with
    # the client's lock held and another call waits for its answer: the hub sees the hang-up
    # and must not block on that lock; both calls fail, the next one connects again.
    stalled = gevent.spawn(outcome, "stall", 30.0)
    gevent.sleep(0.1)
    seen["blocked"] = outcome("echo", 30.0, 10, b"b" * (8 << 20))
    seen["stalled"] = stalled.get()
    seen["after_stall"] = outcome("echo", 5.0, 11)
    seen["awaited"] = len(client._awaited)
    client.close()
    print(json.dumps(seen))
""")


@pytest.fixture
def hostile_server(tmp_path):
    """Answers "echo" at once; holds "later" until "flush", then answers them last first; never
    answers "never"; sends "drip"'s answer in four pieces 0.1 s apart (the next frame's answer
    waits behind it, since a connection's session answers in order); closes the connection on "hangup"; answers "huge" with a frame whose
    announced body is past the limit; on "stall", reads nothing for a second, then closes. Each
    connection in a thread of its own."""
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    conns = []

    def session(conn):
        frames, held = framing.FrameReader(conn), []
        try:
            while True:
                header, body = frames.read_frame()
                op, answer = header.get("op"), framing.encode({"req": header["req"]}, body)
                if op == "later":
                    held.append(answer)
                elif op == "flush":
                    framing.send_all(conn, b"".join(reversed(held)) + answer)
                    held = []
                elif op == "echo":
                    framing.send_all(conn, answer)
                elif op == "drip":
                    piece = -(-len(answer) // 4)        # four pieces, the last one shorter
                    for at in range(0, len(answer), piece):
                        framing.send_all(conn, answer[at:at + piece])
                        time.sleep(0.1)
                elif op == "hangup":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                elif op == "stall":
                    time.sleep(1.0)
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                elif op == "huge":
                    framing.send_all(conn, framing.PREFIX.pack(2, framing.MAX_BODY + 1) + b"{}")
        except (EOFError, OSError):
            pass

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    for conn in conns:
        conn.close()
    thread.join(5)


def test_green_client_settles_every_call_however_the_server_behaves(hostile_server):
    proc = subprocess.run([sys.executable, "-c", CLIENT, hostile_server], cwd=ROOT, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    seen = json.loads(proc.stdout)
    assert seen["green"] is True                      # as in the gateway: greenlets, not threads
    assert seen["flush"] == "0"
    assert seen["held"] == [str(i) for i in range(30)]  # each answer reached its own caller
    assert seen["never"] == "Timeout: no answer from the server within 0.5 s", seen["never"]
    assert seen["echo"] == "7"
    assert seen["drip"] == "12" and seen["behind"] == "13", (seen["drip"], seen["behind"])
    assert seen["hangup"].startswith("Unavailable: server unavailable")
    assert all(w.startswith("Unavailable: server unavailable") for w in seen["waiting"]), seen["waiting"]
    assert seen["again"] == "8"
    assert seen["huge"].startswith("Unavailable: server unavailable: frame too large"), seen["huge"]
    assert seen["after_huge"] == "9"
    assert seen["blocked"].startswith("Unavailable: server unavailable"), seen["blocked"]
    assert seen["stalled"].startswith("Unavailable: server unavailable"), seen["stalled"]
    assert seen["after_stall"] == "11"
    assert seen["awaited"] == 0
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
