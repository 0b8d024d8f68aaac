"""The gateway's per-function admission (reference/gateway/admission.py) in-process, over a
client whose calls end when the test says so: at most max_concurrency in flight, the others
admitted first come first served, a full queue and a wait past max_wait_s refused with 429."""

import threading
import time

import pytest

from reference.functions.storage import Storage
from reference.gateway.admission import Admission
from reference.wire.errors import Overloaded

DEADLINE_S = 30.0


class HeldClient:
    """invoke() records who entered and returns when the test releases that call."""

    def __init__(self):
        self.entered, self.envs = [], []
        self.release = {}
        self.lock = threading.Lock()

    def invoke(self, meta, payload, limits=None, env=None):
        gate = threading.Event()
        with self.lock:
            self.entered.append(payload)
            self.envs.append(env)
            self.release[payload] = gate
        assert gate.wait(DEADLINE_S)
        return payload


def wait_until(condition):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def meta(limit, queue=None, name="f"):
    found = {"id": name + "_1", "name": name, "max_concurrency": limit}
    if queue is not None:
        found["max_queue"] = queue
    return found


def test_at_most_the_limit_runs_and_the_rest_go_in_arrival_order():
    client = HeldClient()
    admission = Admission(client, storage=None)
    results, threads = [], []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: results.append(admission.invoke(meta(2), i)))
        t.start()
        threads.append(t)
        # The next call arrives only once this one is in flight or queued: a known order.
        wait_until(lambda i=i: admission.view("f")["in_flight"] + admission.view("f")["waiting"] == i + 1)
    assert client.entered == [0, 1] and admission.view("f")["waiting"] == 3
    for done, admitted in ((1, 2), (0, 3), (2, 4)):
        client.release[done].set()
        wait_until(lambda admitted=admitted: admitted in client.entered)
        assert len(client.entered) == admitted + 1 and admission.view("f")["in_flight"] == 2
    for payload in (3, 4):
        client.release[payload].set()
    for t in threads:
        t.join(DEADLINE_S)
    assert client.entered == [0, 1, 2, 3, 4] and sorted(results) == [0, 1, 2, 3, 4]
    assert admission.view("f") == {"in_flight": 0, "waiting": 0, "refused": 0}


def test_a_full_queue_and_a_wait_past_the_bound_are_refused_with_retry_after():
    client = HeldClient()
    admission = Admission(client, storage=None, max_wait_s=0.05)
    holder = threading.Thread(target=admission.invoke, args=(meta(1, queue=1), "held"))
    holder.start()
    wait_until(lambda: client.entered == ["held"])
    # No room to wait at all (max_queue 0): refused at once.
    with pytest.raises(Overloaded) as full:
        admission.invoke(meta(1, queue=0), "no-room")
    assert full.value.extra["retry_after"] == 1 and "max_queue" in full.value.message
    # Room to wait, but the one running never ends within max_wait_s: refused, out of the queue.
    with pytest.raises(Overloaded) as waited:
        admission.invoke(meta(1, queue=1), "patient")
    assert "no turn within" in waited.value.message
    assert admission.view("f") == {"in_flight": 1, "waiting": 0, "refused": 2}
    client.release["held"].set()
    holder.join(DEADLINE_S)
    assert client.entered == ["held"] and admission.view("f")["in_flight"] == 0


def test_functions_without_a_limit_pass_and_every_call_gets_its_env_and_secrets(tmp_path):
    storage = Storage(tmp_path)
    stored = storage.deploy("conf", "python", {"code.py": b"print(1)\n"}, {"env": {"E": "1"}}, secrets={"S": "2"})
    client = HeldClient()
    admission = Admission(client, storage)
    calls = [threading.Thread(target=admission.invoke, args=(storage.get("conf"), i)) for i in range(3)]
    for t in calls:
        t.start()
    wait_until(lambda: len(client.entered) == 3)      # no max_concurrency: all three at once
    assert client.envs == [{"E": "1", "S": "2"}] * 3
    assert admission.view("conf") == {"in_flight": 0, "waiting": 0, "refused": 0}  # not counted
    for gate in client.release.values():
        gate.set()
    for t in calls:
        t.join(DEADLINE_S)
    assert stored["secrets"] == ["S"]
