"""Free TCP ports on loopback for the processes a test or a scenario starts.

Binding port 0 and closing the socket hands out a port from the kernel's ephemeral range, the
same range every outgoing connection takes its local port from: between the check and the
server's own bind, a client elsewhere in the run (a test's load, a worker host's NATS
connection) may take the port, and the server then exits with "address already in use". This
happened in CI to a three-node NATS cluster, which asks for nine ports at once. So the ports
come from below the ephemeral range, where no outgoing connection lands, and never twice from
one process.
"""

import random
import socket
import threading

_given = set()
_lock = threading.Lock()


def _ephemeral_low(default=32768):
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port(low=20000):
    """A port on 127.0.0.1 that nothing listens on now, below the ephemeral range, not handed
    out before by this process (falls back to the kernel's choice if that range is full)."""
    high = _ephemeral_low() - 1
    with _lock:
        for _ in range(200):
            port = random.randint(low, high) if high > low else 0
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                port = s.getsockname()[1]
            _given.add(port)
            return port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
