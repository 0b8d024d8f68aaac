"""Function lifecycle on the real stack: list, update (new version, running calls finish on the
old one), delete (name and files), all persistent across a restart."""

import json
import os
import re
import signal
import threading
import time

import pytest

from support import deploy, http, invoke

from harness.run.stack import Stack
from reference.executors.local import QUICK_DEATH_S
from reference.worker.sandbox import isolation

# Sleeps for the seconds it reads, then says which version it is: a call that outlives an update.
SLOW_V1 = b"import sys, time\ntime.sleep(float(sys.stdin.read() or 0))\nprint('v1')\n"
V2 = b"print('v2')\n"


def wait_for_busy_worker(url, deadline_s=30.0):
    """Until /stats shows a worker running something (not a timing assertion: a wait)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status, body, _ = http("GET", url + "/stats")
        if status == 200 and any(w["state"] == "busy" for w in body["workers"]):
            return
        time.sleep(0.02)
    raise AssertionError("no worker became busy: %s" % (body,))


def test_update_runs_new_code_while_running_calls_finish_on_the_old(shared_stack):
    url = shared_stack.url
    first = deploy(url, "slow", "python", SLOW_V1)
    assert first["version"] == 1
    result = {}
    running = threading.Thread(target=lambda: result.update(answer=invoke(url, "slow", "3")))
    running.start()
    try:
        wait_for_busy_worker(url)
        status, body, _ = http("PUT", url + "/function/slow", V2)  # raw body, language kept
        assert status == 200, body
        assert body["version"] == 2 and body["previous"] == first["id"] and body["lang"] == "python"
        status, answer, _ = invoke(url, "slow", "0")
        assert status == 200 and answer["output"] == "v2\n"
    finally:
        running.join(60)
    status, answer, _ = result["answer"]
    assert status == 200 and answer["output"] == "v1\n", answer

    status, body, _ = http("GET", url + "/function/slow")
    assert body["id"] != first["id"] and body["version"] == 2 and body["current"] is True
    assert body["code"] == V2.decode()
    assert [v["version"] for v in body["versions"]] == [2, 1]
    # The old id still names the old version until the function is deleted.
    status, old, _ = http("GET", url + "/function/" + first["id"])
    assert status == 200 and old["version"] == 1 and old["current"] is False


def test_update_json_form_changes_language_and_limits(shared_stack):
    url = shared_stack.url
    deploy(url, "morph", "python", b"print('py')\n", timeout_ms=900)
    doc = {"lang": "js", "code": "console.log('js')", "memory_mb": 64}
    status, body, _ = http("PUT", url + "/function/morph", json.dumps(doc),
                           {"Content-Type": "application/json"})
    assert status == 200, body
    assert body["lang"] == "js" and body["memory_mb"] == 64 and body["timeout_ms"] == 900
    status, answer, _ = invoke(url, "morph", "")
    assert status == 200 and answer["output"] == "js\n"


def test_list_and_delete(shared_stack):
    url = shared_stack.url
    names = ["lc-a", "lc-b", "lc-c"]
    ids = [deploy(url, name, "python", b"print(1)\n")["id"] for name in names]
    http("PUT", url + "/function/lc-b", b"print(2)\n")
    status, body, _ = http("GET", url + "/functions")
    listed = {f["name"]: f for f in body["functions"]}
    assert status == 200 and body["count"] == len(body["functions"])
    assert set(names) <= set(listed) and listed["lc-b"]["version"] == 2

    versions = [v["id"] for v in http("GET", url + "/function/lc-b")[1]["versions"]]
    status, body, _ = http("DELETE", url + "/function/lc-b")
    assert status == 200 and body["deleted"] == versions
    for fn in ("lc-b", ids[1], versions[0]):
        assert invoke(url, fn, "")[0] == 404
        assert http("GET", url + "/function/" + fn)[0] == 404
    assert not any(v in os.listdir(shared_stack.functions_dir) for v in versions)
    assert "lc-b" not in {f["name"] for f in http("GET", url + "/functions")[1]["functions"]}
    assert invoke(url, "lc-a", "")[0] == 200  # the others are untouched
    # The name is free again, and starts over at version 1.
    assert deploy(url, "lc-b", "python", b"print(3)\n")["version"] == 1


def test_lifecycle_errors(shared_stack):
    url = shared_stack.url
    deploy(url, "errs", "python", b"print(1)\n")
    cases = [
        ("PUT", "/function/ghost", b"print(1)", {}, 404),
        ("DELETE", "/function/ghost", None, {}, 404),
        ("PUT", "/function/errs?lang=cobol", b"x", {}, 400),
        ("PUT", "/function/errs", b"", {}, 400),
        ("PUT", "/function/errs", b'{"lang": "py"}', {"Content-Type": "application/json"}, 400),
        ("PUT", "/function/errs?timeout_ms=0", b"print(1)", {}, 400),
    ]
    for method, path, body, headers, expected in cases:
        status, answer, _ = http(method, url + path, body, headers)
        assert status == expected, (method, path, answer)
        assert answer["ok"] is False and answer["error"]
    assert http("GET", url + "/function/errs")[1]["version"] == 1  # nothing changed


def test_versions_and_deletes_survive_a_restart(tmp_path):
    functions = str(tmp_path / "functions")
    with Stack(workers=1, functions_dir=functions) as stack:
        first = deploy(stack.url, "keep", "python", b"print('one')\n")
        assert http("PUT", stack.url + "/function/keep", b"print('two')\n")[0] == 200
        deploy(stack.url, "gone", "python", b"print(0)\n")
        assert http("DELETE", stack.url + "/function/gone")[0] == 200
    with Stack(workers=1, functions_dir=functions) as stack:
        status, body, _ = http("GET", stack.url + "/function/keep")
        assert status == 200 and body["version"] == 2 and body["previous"] == first["id"]
        assert invoke(stack.url, "keep", "")[1]["output"] == "two\n"
        assert invoke(stack.url, first["id"], "")[1]["output"] == "one\n"
        assert http("GET", stack.url + "/function/gone")[0] == 404


def test_a_term_to_the_whole_group_starts_no_replacement_worker(tmp_path):
    # The way a test, a service manager or `kill -- -PGID` stops a stack: every process gets the
    # TERM at once, the workers a moment before the server hears it.
    stack = Stack(workers=3, functions_dir=str(tmp_path / "functions")).start()
    try:
        # Past the age at which a death counts as "quick" (and is replaced only after a back-off,
        # which the stop would cancel anyway): a worker that dies now would be replaced at once.
        time.sleep(QUICK_DEATH_S + 0.5)
        os.killpg(stack.proc.pid, signal.SIGTERM)
        assert stack.proc.wait(60) == 0
        log = stack.output()
    finally:
        stack.close()
    started = re.findall(r"worker \d+ started \(pid \d+\)", log)
    assert len(started) == 3, log
    assert "server stopping" in log


def test_a_term_to_the_whole_group_leaves_no_cgroup_of_its_workers(tmp_path):
    """Ctrl-C in a terminal and `kill -- -PGID` reach the workers before the server: they die
    without removing their cgroups, and the server, which outlives them, sweeps those."""
    hierarchy = isolation.cgroups()
    if hierarchy is None:
        pytest.skip("no writable cgroups here (root and a cgroup controller are needed)")
    stack = Stack(workers=2, functions_dir=str(tmp_path / "functions")).start()
    try:
        deploy(stack.url, "greet", "python", b"print('hi')\n")
        for _ in range(4):      # both workers make their call groups
            assert invoke(stack.url, "greet", "")[1]["output"] == "hi\n"
        os.killpg(stack.proc.pid, signal.SIGTERM)
        assert stack.proc.wait(60) == 0
        log = stack.output()
    finally:
        stack.close()
    pids = re.findall(r"worker \d+ started \(pid (\d+)\)", log)
    assert len(pids) == 2, log
    left = [entry for base in hierarchy.bases.values() for entry in os.listdir(base)
            if any(entry.startswith("minifaas-%s-" % pid) for pid in pids)]
    assert left == [], left
