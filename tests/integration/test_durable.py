"""Logs and durable records: each call's stderr by function (GET /function/NAME/logs, `minifaas
logs`), invocation records and async calls in the gateway's SQLite store, which outlives a
gateway killed with SIGKILL (the supervisor of `minifaas up` starts a new one on the same
functions directory)."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from support import ROOT, deploy, http, invoke
from test_faults import component_pid, wait_for

from reference.gateway import store as store_mod
from reference.gateway.calls import Calls, key_fingerprint
from reference.gateway.metrics import Metrics
from reference.gateway.records import STDERR_KEPT, InvocationRecords
from reference.wire.errors import Unavailable
from reference.wire.jobs import Outcome

NOISY = b"import sys\ndata = sys.stdin.read()\nsys.stderr.write('said ' + data + '\\n')\nprint(data)\n"
LOUD = b"import sys\nsys.stderr.write('x' * 10000 + 'END')\n"
SLEEPY = b"import sys, time\ntime.sleep(float(sys.stdin.read() or 0))\nprint('slept')\n"


def logs(url, name, query=""):
    status, body, _ = http("GET", "%s/function/%s/logs%s" % (url, name, query))
    assert status == 200, body
    return body


def test_logs_keep_each_calls_stderr_and_follow_a_cursor(shared_stack):
    url = shared_stack.url
    deploy(url, "noisy", "python", NOISY)
    answers = [invoke(url, "noisy", "call %d" % i) for i in range(3)]
    first = logs(url, "noisy")
    assert [e["stderr"] for e in first["logs"]] == ["said call %d\n" % i for i in range(3)]
    assert [e["worker"] for e in first["logs"]] == [body["worker"] for _, body, _ in answers]
    assert [e["call_id"] for e in first["logs"]] == [headers["X-Call-Id"] for _, _, headers in answers]
    assert all(e["status"] == 200 and e["call_id"] and e["time"] > 0 for e in first["logs"])
    assert first["next"] == first["logs"][-1]["seq"]
    # Polling with the cursor gives only what came since, then nothing.
    invoke(url, "noisy", "later")
    newer = logs(url, "noisy", "?since=%d" % first["next"])
    assert [e["stderr"] for e in newer["logs"]] == ["said later\n"]
    assert logs(url, "noisy", "?since=%d" % newer["next"])["logs"] == []
    # A failing call is logged with its status; a long stderr keeps its last 4 KiB.
    deploy(url, "loud", "python", LOUD + b"\nsys.exit(2)\n")
    assert invoke(url, "loud", "")[0] == 500
    entry = logs(url, "loud")["logs"][-1]
    assert entry["status"] == 500 and entry["exit_code"] == 2 and entry["stderr_truncated"] is True
    assert entry["stderr"].endswith("END") and len(entry["stderr"].encode()) == STDERR_KEPT
    assert entry["stderr_bytes"] == 10003
    assert http("GET", url + "/function/noisy/logs?since=x")[0] == 400
    assert http("GET", url + "/function/nothing/logs")[0] == 404


def test_minifaas_logs_prints_and_follows(shared_stack):
    url = shared_stack.url
    deploy(url, "chatty", "python", NOISY)
    invoke(url, "chatty", "one")
    command = [sys.executable, "-m", "reference", "logs", "chatty", "--url", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "status=200" in done.stdout and "  said one" in done.stdout
    # SIGINT back to its default in the child: a shell that starts a command in the background
    # (`bash .ci/run &`) has it ignored, and python3 then never turns it into Ctrl-C.
    follower = subprocess.Popen(command + ["--follow", "--interval", "0.1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    seen = []

    def read_until(line):
        deadline = time.monotonic() + 60
        while line not in seen:
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("--follow printed only %r" % seen) from None

    try:
        read_until("  said one\n")      # the first poll printed what was there ...
        invoke(url, "chatty", "two")
        read_until("  said two\n")      # ... and a later one what came since
        assert seen.count("  said one\n") == 1   # each entry printed once
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            os.killpg(follower.pid, signal.SIGKILL)
            follower.wait()


def test_records_and_finished_async_calls_outlive_a_killed_gateway(start_stack):
    stack = start_stack(workers=1)
    url = stack.url
    deploy(url, "noisy", "python", NOISY)
    for i in range(3):
        assert invoke(url, "noisy", "n%d" % i)[0] == 200
    status, accepted, _ = http("POST", url + "/invoke?fn=noisy&async=1", json.dumps({"input": "bg"}))
    assert status == 202
    wait_for(lambda: http("GET", url + "/call/" + accepted["call_id"])[1]["state"] == "done")
    before = http("GET", url + "/function/noisy/invocations")[1]
    assert before["count"] == 4 and "sqlite" in before["kept"]
    os.kill(component_pid(stack, "gateway"), signal.SIGKILL)
    wait_for(lambda: stack.health()[0] == 200, timeout=60)
    after = http("GET", url + "/function/noisy/invocations")[1]
    assert after["invocations"] == before["invocations"]
    assert [e["stderr"] for e in logs(url, "noisy")["logs"]] == ["said n0\n", "said n1\n", "said n2\n", "said bg\n"]
    status, call, _ = http("GET", url + "/call/" + accepted["call_id"])
    assert status == 200 and call["state"] == "done" and call["output"] == "bg\n" and call["ok"] is True
    # A deleted function's records go with it.
    assert http("DELETE", url + "/function/noisy")[0] == 200
    deploy(url, "noisy", "python", NOISY)
    assert http("GET", url + "/function/noisy/invocations")[1]["count"] == 0


def test_async_calls_accepted_before_a_sigkill_all_end_done(start_stack):
    """Eight calls that cannot end for 10 s fill the gateway's eight async runners, so the two
    after them are still queued in the gateway when it is killed: the new gateway runs those,
    and reports the ones it was running as interrupted (they may have run: not run twice)."""
    stack = start_stack(workers=4)
    url = stack.url
    deploy(url, "stuck", "python", SLEEPY, timeout_ms=10000)
    deploy(url, "quick", "python", NOISY)
    ids = []
    for _ in range(8):
        status, body, _ = http("POST", url + "/invoke?fn=stuck&async=1", b"60")
        assert status == 202, body
        ids.append(body["call_id"])
    quick = []
    for i in range(2):
        status, body, _ = http("POST", url + "/invoke?fn=quick&async=1", json.dumps({"input": "q%d" % i}))
        assert status == 202, body
        quick.append(body["call_id"])
    os.kill(component_pid(stack, "gateway"), signal.SIGKILL)
    wait_for(lambda: stack.health()[0] == 200, timeout=60)

    def final(call_id):
        status, body, _ = http("GET", url + "/call/" + call_id)
        assert status == 200, body   # never unknown
        return body if body["state"] == "done" else None

    ends = {call_id: wait_for(lambda: final(call_id), timeout=120) for call_id in ids + quick}
    for call_id in ids:
        # Interrupted, unless the kill came so late that the call timed out before it.
        assert ends[call_id]["kind"] in ("interrupted", "timeout"), ends[call_id]
        assert ends[call_id]["ok"] is False
    if all(ends[c]["kind"] == "interrupted" for c in ids):
        # No runner ever came free, so the quick calls had not started: they ran after the restart.
        assert [ends[c]["output"] for c in quick] == ["q0\n", "q1\n"]
        assert all(ends[c]["ok"] is True and ends[c]["status"] == 200 for c in quick)
    else:
        assert all(ends[c]["status"] in (200, 500) for c in quick)
    interrupted = [ends[c] for c in ids if ends[c]["kind"] == "interrupted"]
    assert all("gateway stopped while this call was running" in e["error"] for e in interrupted)


UNIQUE = b"import os, sys\nprint(sys.stdin.read(), os.urandom(8).hex())\n"


def test_idempotency_keys_outlive_a_killed_gateway(start_stack):
    """A client that retries after the gateway died (its connection cut, or its answer lost)
    sends the same Idempotency-Key to the next gateway: the first call's answer comes back, and
    the function does not run a second time; the key still refuses another input."""
    stack = start_stack(workers=1)
    url = stack.url
    deploy(url, "once", "python", UNIQUE)
    key = {"Idempotency-Key": "order-7"}
    status, first, _ = http("POST", url + "/invoke?fn=once", json.dumps({"input": "a"}), key)
    assert status == 200, first
    status, queued, _ = http("POST", url + "/invoke?fn=once&async=1", json.dumps({"input": "b"}),
                             {"Idempotency-Key": "order-8"})
    assert status == 202
    wait_for(lambda: http("GET", url + "/call/" + queued["call_id"])[1]["state"] == "done")
    os.kill(component_pid(stack, "gateway"), signal.SIGKILL)
    wait_for(lambda: stack.health()[0] == 200, timeout=60)

    status, again, headers = http("POST", url + "/invoke?fn=once", json.dumps({"input": "a"}), key)
    assert status == 200 and headers["Idempotent-Replayed"] == "true"
    assert again["output"] == first["output"] and again["call_id"] == first["call_id"]
    status, async_again, headers = http("POST", url + "/invoke?fn=once&async=1", json.dumps({"input": "b"}),
                                        {"Idempotency-Key": "order-8"})
    assert status == 202 and async_again["call_id"] == queued["call_id"] and async_again["state"] == "done"
    assert headers["Idempotent-Replayed"] == "true"
    assert len(http("GET", url + "/function/once/invocations")[1]["invocations"]) == 2   # a and b, once each
    status, body, _ = http("POST", url + "/invoke?fn=once", json.dumps({"input": "other"}), key)
    assert status == 409 and first["call_id"] in body["error"]


# -- in-process: what a new gateway does with a dead one's rows ---------------------------------

class Echo:
    """A stand-in server: the function prints its input."""

    def __init__(self):
        self.inputs = []

    def invoke(self, meta, payload):
        self.inputs.append(payload)
        return Outcome(stdout=payload, worker=0)


def dead_owner():
    """The owner name of a store in a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = "%s:0" % store_mod.process_owner(child.pid)
    child.wait()
    assert not store_mod.owner_alive(owner)
    return owner


def test_recover_runs_queued_calls_and_fails_running_ones(tmp_path):
    path = str(tmp_path / store_mod.FILE_NAME)
    store = store_mod.Store(path)
    owner = dead_owner()
    insert = ("INSERT INTO calls (call_id, name, fn_id, owner, state, submitted, payload) "
              "VALUES (?, 'f', ?, ?, ?, 1.0, ?)")
    store.write([(insert, ("queued1", "f_1", owner, "queued", b"again")),
                 (insert, ("running1", "f_1", owner, "running", None)),
                 (insert, ("gone1", "f_0", owner, "queued", b"x")),
                 (insert, ("other", "f_1", "%s:0" % store_mod.process_owner(), "queued", b"alive"))])
    server = Echo()
    calls = Calls(server, InvocationRecords(store), Metrics(), store=store)
    try:
        metas = {"f_1": {"id": "f_1", "name": "f", "timeout_ms": 1000, "memory_mb": 64}}
        assert calls.recover(metas.get) == {"run": 1, "interrupted": 2, "callbacks": 0}
        assert calls.get("queued1").done.wait(30)
        again = calls.fetch("queued1")
        assert again["state"] == "done" and again["output"] == "again" and again["ok"] is True
        assert server.inputs == [b"again"]   # neither the running call nor a live store's ran
        running = calls.fetch("running1")
        assert running["state"] == "done" and running["kind"] == "interrupted" and running["ok"] is False
        gone = calls.fetch("gone1")
        assert gone["status"] == 404 and "deleted" in gone["error"]
        assert calls.fetch("other")["state"] == "queued"
        # What the store now says, as a later gateway would read it.
        rows = dict(store.read("SELECT call_id, state FROM calls"))
        assert rows == {"queued1": "done", "running1": "done", "gone1": "done", "other": "queued"}
    finally:
        calls.close()


class Down:
    """A stand-in server that is not there."""

    def invoke(self, meta, payload):
        raise Unavailable("server unavailable: not started")


META = {"id": "f_1", "name": "f", "timeout_ms": 1000, "memory_mb": 64}


def test_a_keyed_call_cut_by_the_gateways_death_is_answered_interrupted_not_run_again(tmp_path):
    """A keyed sync call is in the store, running, before it runs: if that gateway dies, the
    next one ends it interrupted (it may have run), and a retry with the key gets that answer."""
    path = str(tmp_path / store_mod.FILE_NAME)
    store = store_mod.Store(path)
    owner = dead_owner()
    calls = Calls(Echo(), InvocationRecords(store), Metrics(), store=store)
    try:
        call, replayed = calls.invoke(META, b"first", key="k-1")
        assert call.status == 200 and not replayed
    finally:
        calls.close()
    row = store.read("SELECT state, idem_key, fingerprint FROM calls WHERE call_id = ?", (call.call_id,))
    assert row[0][:2] == ("done", "k-1") and row[0][2]
    # A call the dead gateway was running when it died: its row says running, with its key.
    store = store_mod.Store(path)
    fingerprint = key_fingerprint(META, b"second")
    store.write([("INSERT INTO calls (call_id, name, fn_id, owner, state, submitted, idem_key, fingerprint) "
                  "VALUES ('cut1', 'f', 'f_1', ?, 'running', 1.0, 'k-2', ?)", (owner, fingerprint))])
    server = Echo()
    calls = Calls(server, InvocationRecords(store), Metrics(), store=store)
    try:
        assert calls.recover({"f_1": META}.get)["interrupted"] == 1
        cut, replayed = calls.invoke(META, b"second", key="k-2")
        assert replayed and cut.call_id == "cut1" and cut.status == 500 and cut.body["kind"] == "interrupted"
        done, replayed = calls.invoke(META, b"first", key="k-1")
        assert replayed and done.call_id == call.call_id and done.body["output"] == "first"
        assert server.inputs == []      # neither ran again
    finally:
        calls.close()


def test_a_keyed_call_that_never_ran_lets_go_of_its_key_in_the_store_too(tmp_path):
    path = str(tmp_path / store_mod.FILE_NAME)
    store = store_mod.Store(path)
    calls = Calls(Down(), InvocationRecords(store), Metrics(), store=store)
    try:
        call, _ = calls.invoke(META, b"x", key="k-3")
        assert call.status == 503
    finally:
        calls.close()
    server = Echo()
    store = store_mod.Store(path)
    calls = Calls(server, InvocationRecords(store), Metrics(), store=store)
    try:
        call, replayed = calls.invoke(META, b"x", key="k-3")
        assert not replayed and call.status == 200 and server.inputs == [b"x"]
    finally:
        calls.close()


def test_a_store_made_before_idempotency_keys_were_kept_opens_with_its_rows(tmp_path):
    import sqlite3

    path = str(tmp_path / store_mod.FILE_NAME)
    old_calls = store_mod.SCHEMA[store_mod.SCHEMA.index("CREATE TABLE IF NOT EXISTS calls"):
                                 store_mod.SCHEMA.index("CREATE INDEX IF NOT EXISTS calls_by_state")]
    assert "idem_key" not in old_calls
    db = sqlite3.connect(path)
    db.executescript(old_calls)
    # A recent call: one finished long ago is pruned by the writer's first sweep, as it should be.
    now = time.time()
    db.execute("INSERT INTO calls (call_id, name, fn_id, owner, state, submitted, finished, status, body) "
               "VALUES ('old1', 'f', 'f_1', 'x:0', 'done', ?, ?, 200, '{\"ok\": true, \"output\": \"kept\"}')",
               (now - 2, now - 1))
    db.commit()
    db.close()
    store = store_mod.Store(path)
    calls = Calls(Echo(), InvocationRecords(store), Metrics(), store=store)
    try:
        assert calls.fetch("old1")["output"] == "kept"
        call, _ = calls.invoke(META, b"new", key="k-4")
        assert call.status == 200
        assert store.read("SELECT idem_key FROM calls WHERE call_id = ?", (call.call_id,)) == [("k-4",)]
    finally:
        calls.close()


def test_the_store_prunes_records_by_age_and_count(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "PER_FUNCTION", 3)
    store = store_mod.Store(str(tmp_path / store_mod.FILE_NAME))
    records = InvocationRecords(store)
    try:
        meta = {"id": "f_1", "name": "f"}
        for i in range(5):
            records.add(meta, 200, {"stderr": "e%d" % i})
        records.add({"id": "g_1", "name": "g"}, 200, {})
        store.enqueue("UPDATE invocations SET time = 1.0 WHERE name = 'g'", ())
        assert store.flush()
        store.prune()
        assert [e["stderr"] for e in records.logs("f")] == ["e2", "e3", "e4"]
        assert records.logs("g") == []
    finally:
        store.close()


def test_a_gateway_whose_store_cannot_open_keeps_records_in_memory(tmp_path):
    from wsgi_app import call

    from reference.functions.storage import Storage
    from reference.gateway.app import make_app

    (tmp_path / store_mod.FILE_NAME).write_bytes(b"not a database, " * 100)
    app = make_app(Storage(tmp_path), Echo())
    try:
        assert app.calls.store is None
        assert call(app, "POST", "/deploy", NOISY, query="name=f&lang=py").status == 201
        assert call(app, "POST", "/invoke", b"hi", query="fn=f").status == 200
        answer = call(app, "GET", "/function/f/invocations")
        assert answer.json["count"] == 1 and "in memory" in answer.json["kept"]
    finally:
        app.calls.close()


def test_records_encoded_with_orjson_read_back_as_the_json_module_wrote_them(tmp_path):
    # The records are written with orjson (store.encode_record): the same values read back,
    # as text, and what orjson refuses (an int past 64 bits) is left to the json module.
    record = {"time": 1764640000.123, "id": "f-1", "version": 3, "status": 200, "kind": "ok",
              "total_ms": 1.25, "queue_ms": 0.001, "init_ms": None, "exec_ms": 1e-05, "worker": 0,
              "cold": False, "exit_code": 0, "output_bytes": 12, "truncated": False,
              "stderr_bytes": 0, "error": "caf\u00e9 \u2603 \"quoted\"\n"}
    for value in (record, dict(record, exit_code=1 << 70)):
        text = store_mod.encode_record(value)
        assert isinstance(text, str) and json.loads(text) == json.loads(store_mod.encode(value)) == value
    store = store_mod.Store(str(tmp_path / store_mod.FILE_NAME))
    try:
        records = InvocationRecords(store)
        records.add({"id": "f-1", "name": "f", "version": 3}, 200,
                    {"output": "hi", "worker": 1, "exec_ms": 0.5, "duration_ms": 0.75}, "c1")
        assert store.read("SELECT typeof(record) FROM invocations") == [("text",)]
        [got] = records.recent("f")
        assert got["worker"] == 1 and got["exec_ms"] == 0.5 and got["total_ms"] == 0.75
        assert got["call_id"] == "c1" and got["output_bytes"] == 2 and got["seq"] == 1
    finally:
        store.close()


BATCH = [("f", 1764640000.123, '{"a": "caf\u00e9 \\"q\\"", "n": 1e-05}', "line one\nline \u2603 two\t\x01"),
         ("g", 1764640000.5, "{}", ""),
         ("f", 1764640001.0, '{"b": [1, 2.5, null]}', "x" * 5000)]


def _written(tmp_path, name):
    store = store_mod.Store(str(tmp_path / name))
    try:
        store.write([(store_mod.INSERT_RECORD, row) for row in BATCH])
        return store.read("SELECT seq, name, time, record, stderr, typeof(time) FROM invocations ORDER BY seq")
    finally:
        store.close()


def test_a_batch_of_records_in_one_statement_reads_back_as_row_by_row(tmp_path, monkeypatch):
    """The batch form of the records' INSERT (json_each over one JSON array) and executemany,
    its fallback, store the same rows: text as it was, times as the same floats."""
    bulk = _written(tmp_path, "bulk.sqlite")
    monkeypatch.setattr(store_mod, "BULK_OK", False)
    one_by_one = _written(tmp_path, "rows.sqlite")
    assert bulk == one_by_one
    assert [row[1:5] for row in bulk] == BATCH and {row[5] for row in bulk} == {"real"}


def test_a_sqlite_without_json_each_writes_the_records_row_by_row(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(store_mod, "BULK_OK", True)
    monkeypatch.setitem(store_mod._BULK, store_mod.INSERT_RECORD, "SELECT no_such_function(?)")
    rows = _written(tmp_path, "old.sqlite")
    assert [row[1:5] for row in rows] == BATCH
    assert store_mod.BULK_OK is False       # and so from then on
    assert "records written one by one" in capfd.readouterr().err


def test_every_record_enqueued_wakes_a_writer_that_writes_it(tmp_path, monkeypatch):
    """The writer is woken by the first record after each batch only: records enqueued from
    many threads, in bursts that straddle batches (BATCH_MAX of 3), each get written without
    waiting for the writer's minute-long idle timer (flush gives up after its 2 s)."""
    monkeypatch.setattr(store_mod, "BATCH_MAX", 3)
    store = store_mod.Store(str(tmp_path / store_mod.FILE_NAME))
    unwritten = []
    try:
        def burst(thread):
            for i in range(40):
                for j in range(i % 5):
                    store.enqueue(store_mod.INSERT_RECORD, ("f%d" % thread, time.time(), '{"n": %d}' % i, ""))
                if not store.flush(timeout=2.0):
                    unwritten.append((thread, i))
                if i % 7 == 0:
                    time.sleep(0.02)    # the writer goes idle, waiting for a wake-up

        threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert unwritten == []
        count = store.read("SELECT COUNT(*) FROM invocations")[0][0]
        assert count == 4 * sum(i % 5 for i in range(40))
    finally:
        store.close()
