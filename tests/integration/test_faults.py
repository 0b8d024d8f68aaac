"""Dying processes and overload: every request gets one clear answer and service comes back."""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from support import deploy, http, invoke, stop_group, wait_listening

from harness.run.stack import free_port

SLEEPY = b"import sys, time\ntime.sleep(float(sys.stdin.read() or 0))\nprint('slept')\n"


def children_of(ppid):
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        pids.append(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def component_pid(stack, name):
    """The pid of the `minifaas up` child running component `name`."""
    for pid in children_of(stack.proc.pid):
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if name.encode() in f.read().split(b"\0"):
                return pid
    raise AssertionError("no %s process under the supervisor" % name)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met within %.0f s" % timeout)


def stats(stack):
    status, body, _ = http("GET", stack.url + "/stats")
    return body if status == 200 else None


def test_a_worker_killed_mid_invocation_is_replaced_and_its_call_answered(start_stack):
    stack = start_stack(workers=2, strategy="FIFO")
    deploy(stack.url, "sleepy", "python", SLEEPY)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(invoke, stack.url, "sleepy", "3")
        busy = wait_for(lambda: [w for w in (stats(stack) or {}).get("workers", []) if w["state"] == "busy"])
        victim = busy[0]
        os.kill(victim["pid"], signal.SIGKILL)
        status, body, _ = call.result(30)
    assert status == 502 and body["kind"] == "worker_lost", body

    # The pool is back to its size, with a new process in the dead one's place.
    def replaced():
        workers = (stats(stack) or {}).get("workers", [])
        return len([w for w in workers if w["state"] == "idle"]) == 2 and victim["pid"] not in [w["pid"] for w in workers]
    wait_for(replaced)
    status, body, _ = invoke(stack.url, "sleepy", "0")
    assert status == 200 and body["output"] == "slept\n"


def test_other_calls_are_unaffected_when_a_worker_dies(start_stack):
    stack = start_stack(workers=2, strategy="RR")
    deploy(stack.url, "sleepy", "python", SLEEPY)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        victim_call = pool.submit(invoke, stack.url, "sleepy", "3")
        busy = wait_for(lambda: [w for w in (stats(stack) or {}).get("workers", []) if w["state"] == "busy"])
        others = [pool.submit(invoke, stack.url, "sleepy", "0") for _ in range(6)]
        os.kill(busy[0]["pid"], signal.SIGKILL)
        answers = [f.result(60) for f in others]
        victim = victim_call.result(60)
    assert victim[0] == 502
    # Calls queued behind the dead worker had not started: they are run elsewhere, not failed.
    assert [status for status, _, _ in answers] == [200] * 6, answers


def test_server_death_gives_503_then_service_resumes_by_itself(start_stack):
    stack = start_stack(workers=2)
    deploy(stack.url, "hi", "python", b"print('hi')")
    os.kill(component_pid(stack, "server"), signal.SIGKILL)
    status, body, _ = invoke(stack.url, "hi", "")
    assert status == 503 and "unavailable" in body["error"], body
    wait_for(lambda: stack.health()[0] == 200)
    status, body, _ = invoke(stack.url, "hi", "")
    assert status == 200 and body["output"] == "hi\n"


def test_balancer_death_gives_503_then_service_resumes_by_itself(start_stack):
    stack = start_stack(workers=2)
    deploy(stack.url, "hi", "python", b"print('hi')")
    os.kill(component_pid(stack, "balancer"), signal.SIGKILL)
    status, body, _ = invoke(stack.url, "hi", "")
    # The server may notice the loss a moment after the call: either way the call is answered.
    assert status in (200, 503), body
    wait_for(lambda: stack.health()[0] == 200)
    status, body, _ = invoke(stack.url, "hi", "")
    assert status == 200 and body["output"] == "hi\n"


def test_gateway_death_is_survived_and_functions_found_again(start_stack):
    stack = start_stack(workers=1)
    answer = deploy(stack.url, "hi", "python", b"print('hi')")
    os.kill(component_pid(stack, "gateway"), signal.SIGKILL)
    wait_for(lambda: stack.health()[0] == 200)
    status, body, _ = invoke(stack.url, answer["id"], "")
    assert status == 200 and body["output"] == "hi\n"


def test_overload_answers_429_with_retry_after(start_stack):
    stack = start_stack(workers=1, extra_args=["--max-queue", "2"])
    deploy(stack.url, "sleepy", "python", SLEEPY)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: invoke(stack.url, "sleepy", "1"), range(8)))
    statuses = sorted(status for status, _, _ in answers)
    assert 200 in statuses and 429 in statuses, statuses
    assert set(statuses) <= {200, 429}
    rejected = [(body, headers) for status, body, headers in answers if status == 429]
    assert all(headers.get("Retry-After") for _, headers in rejected)
    assert all("overloaded" in body["error"] for body, _ in rejected)


# A server whose workers cannot make their runtimes: WorkerRuntimes is replaced before the
# server forks, so each child fails its boot as a worker on a broken machine would.
BROKEN_SERVER = """
import sys
import reference.worker.runtimes as runtimes

class WorkerRuntimes:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("no runtimes on this machine (test)")

runtimes.WorkerRuntimes = WorkerRuntimes
from reference.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_workers_that_cannot_boot_stop_the_respawns_and_health_says_why(tmp_path):
    socks = tempfile.mkdtemp(prefix="mf-boot-", dir="/tmp")  # short: a socket path fits in 108 bytes
    lb_sock, server_sock = os.path.join(socks, "lb.sock"), os.path.join(socks, "server.sock")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    common = ["--lb-sock", lb_sock, "--server-sock", server_sock]
    commands = {
        "balancer": [sys.executable, "-m", "reference", "balancer"] + common,
        "server": [sys.executable, "-c", BROKEN_SERVER, "server", "--workers", "2"] + common,
        "gateway": [sys.executable, "-m", "reference", "gateway", "--port", str(port),
                    "--functions", str(tmp_path / "functions")] + common,
    }
    procs, logs = {}, {}

    def output():
        return "\n".join("--- %s\n%s" % (name, path.read_text(errors="replace")) for name, path in logs.items())

    try:
        for name, command in commands.items():
            logs[name] = tmp_path / ("%s.log" % name)
            with open(logs[name], "wb") as log:
                procs[name] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               start_new_session=True)
        wait_listening(port, procs["gateway"], output)

        def broken_health():
            status, body, _ = http("GET", url + "/health")
            return (status, body) if isinstance(body, dict) and body.get("broken") else None
        status, body = wait_for(broken_health)
        assert status == 503 and "workers" in body["down"], body
        assert "could not boot" in body["broken"] and "no runtimes on this machine" in body["broken"], body

        deploy(url, "hi", "python", b"print('hi')")
        status, body, _ = invoke(url, "hi", "")
        assert status == 503 and "no runtimes on this machine" in body["error"], body

        server_log = logs["server"].read_text(errors="replace")
        assert procs["server"].poll() is None, output()  # it stays up, saying why
        # Two workers forked, none replaced: the respawn loop stopped at the first boot error.
        assert server_log.count("started (pid") == 2, server_log
        assert "exited with code 3" in server_log and "not starting any more workers" in server_log, server_log
    finally:
        for proc in procs.values():
            stop_group(proc)
        shutil.rmtree(socks, ignore_errors=True)
