"""free_port hands out loopback ports where no outgoing connection can land, never twice."""

import itertools
import socket

from reference import ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range():
    low = ports._ephemeral_low()
    given = [ports.free_port() for _ in range(300)]
    assert len(set(given)) == len(given)
    assert all(20000 <= p < low for p in given)
    for p in given[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))   # nothing holds it


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        held.listen()
        # Then a port that was free a moment ago, as often as asked: not taken + 1, which is in
        # the ephemeral range next to `taken`, where the run's own connections may hold it
        # (a clean-clone CI run found it so, and the choices ran out).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            other = probe.getsockname()[1]
        choices = itertools.chain([taken, taken], itertools.repeat(other))
        monkeypatch.setattr(ports.random, "randint", lambda a, b: next(choices))
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65536)
        ports._given.discard(other)
        assert ports.free_port() != taken
