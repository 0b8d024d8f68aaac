"""The whole platform end to end: `minifaas up` and the three components started one by one."""

import os
import signal
import subprocess
import sys
import time

import pytest
from needs import need_toolchain
from support import EXAMPLES, deploy, http, invoke

from harness.run.stack import free_port


def test_seed_walkthrough_with_python(shared_stack):
    url = shared_stack.url
    answer = deploy(url, "greet", "python", EXAMPLES / "greet.py")
    assert answer["ok"] is True and answer["name"] == "greet" and answer["lang"] == "python"
    assert answer["id"].startswith("greet_") and answer["wasm"] is False

    status, body, _ = invoke(url, answer["id"], "Ada")
    assert status == 200, body
    assert body["ok"] is True and "Ada" in body["output"] and body["exit_code"] == 0
    assert body["worker"] in (0, 1)

    # The plain name is accepted as well as the id.
    status, body, _ = invoke(url, "greet", "Grace")
    assert status == 200 and "Grace" in body["output"]

    status, body, _ = http("GET", url + "/function/greet")
    assert status == 200
    assert body["id"] == answer["id"] and body["code"] == (EXAMPLES / "greet.py").read_text()

    status, body, _ = http("POST", url + "/deploy?name=greet&lang=python", b"print(1)")
    assert status == 409
    assert body["error"] == "function name 'greet' already exists, please choose another name"

    status, body, _ = invoke(url, "nonexistent", "x")
    assert status == 404 and body["ok"] is False and body["error"] == "function not found"


def test_seed_walkthrough_with_c_compiled_to_wasm(shared_stack):
    need_toolchain("c")
    url = shared_stack.url
    answer = deploy(url, "hello", "c", EXAMPLES / "hello.c")
    assert answer["wasm"] is True
    status, body, _ = invoke(url, answer["id"], "test data")
    assert status == 200, body
    assert body["output"].startswith("Hello from FAAS!")
    assert "test data" in body["output"]

    # The JSON form of deploy, with the seed's own one-liner.
    code = '#include <stdio.h>\nint main() { printf("Test"); return 0; }'
    status, body, _ = http("POST", url + "/deploy", __import__("json").dumps(
        {"name": "test", "lang": "c", "code": code}), {"Content-Type": "application/json"})
    assert status == 201, body
    status, body, _ = invoke(url, body["id"])
    assert status == 200 and body["output"] == "Test"

    status, body, _ = http("POST", url + "/deploy?name=broken&lang=c", b"int main( { return 0; }")
    assert status == 422 and body["details"], body


def test_an_answer_gives_its_times_in_milliseconds_to_the_microsecond(shared_stack):
    """queue_ms, init_ms and exec_ms as the headers give them: three decimals, no float noise
    (43.67998399993667 said nothing more than 43.68 and cost the gateway a float repr each)."""
    url = shared_stack.url
    deploy(url, "timed", "python", EXAMPLES / "greet.py")
    for _ in range(2):      # a cold call, then a warm one
        status, body, headers = invoke(url, "timed", "x")
        assert status == 200, body
        for field in ("queue_ms", "init_ms", "exec_ms", "duration_ms"):
            assert body[field] == round(body[field], 3) and body[field] >= 0, (field, body)
        assert body["exec_ms"] == float(headers["X-Exec-Ms"]) and body["queue_ms"] == float(headers["X-Queue-Ms"])


def test_function_input_follows_the_contract(shared_stack):
    url = shared_stack.url
    deploy(url, "echo", "python", b"import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n")
    assert invoke(url, "echo", "text")[1]["output"] == "text"           # a JSON string: its bytes
    assert invoke(url, "echo", {"a": 1})[1]["output"] == '{"a": 1}'     # other JSON: its JSON text
    assert invoke(url, "echo", raw=b"raw bytes")[1]["output"] == "raw bytes"  # not JSON: as is


def test_functions_are_found_again_after_a_restart(start_stack, tmp_path):
    functions = str(tmp_path / "functions")
    first = start_stack(functions_dir=functions)
    answer = deploy(first.url, "keep", "python", b"print('kept')")
    first.stop()

    second = start_stack(functions_dir=functions)
    status, body, _ = http("GET", second.url + "/function/keep")
    assert status == 200 and body["id"] == answer["id"]
    status, body, _ = invoke(second.url, answer["id"], "")
    assert status == 200 and body["output"] == "kept\n"


def group_members(pgid):
    members = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == pgid:
                    members.append(int(pid))
            except ProcessLookupError:
                pass
    return members


def test_up_stops_everything_on_sigterm_and_removes_its_sockets(start_stack):
    stack = start_stack(workers=2)
    pgid = stack.proc.pid
    assert len(group_members(pgid)) >= 6  # supervisor, balancer, server, two workers, gateway
    assert os.stat(stack.lb_sock).st_mode & 0o777 == 0o600
    assert os.stat(stack.server_sock).st_mode & 0o777 == 0o600

    stack.proc.send_signal(signal.SIGTERM)
    assert stack.proc.wait(20) == 0
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(pgid) == []
    assert not os.path.exists(stack.lb_sock) and not os.path.exists(stack.server_sock)


def test_components_started_one_by_one_in_any_order_find_each_other(tmp_path):
    """The seed's three terminals, started in reverse order: each waits for its peer."""
    port = free_port()
    socks = ["--lb-sock", str(tmp_path / "lb.sock"), "--server-sock", str(tmp_path / "server.sock")]
    base = [sys.executable, "-m", "reference"]
    commands = [
        base + ["gateway", "--port", str(port), "--functions", str(tmp_path / "functions")] + socks,
        base + ["server", "--workers", "2"] + socks,
        base + ["balancer", "--strategy", "FIFO"] + socks,
    ]
    url = "http://127.0.0.1:%d" % port
    procs = []
    try:
        for command in commands:
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          start_new_session=True))
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                status, body, _ = http("GET", url + "/health", timeout=2)
            except OSError:  # the gateway is not listening yet
                status = None
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, [p.poll() for p in procs]
        deploy(url, "hi", "python", b"print('hi')")
        status, body, _ = invoke(url, "hi", "")
        assert status == 200 and body["output"] == "hi\n"
        status, stats, _ = http("GET", url + "/stats")
        assert status == 200 and stats["strategy"] == "FIFO" and len(stats["workers"]) == 2
    finally:
        for p in procs:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


def test_up_with_an_api_key_protects_deploy(start_stack):
    stack = start_stack(workers=1, env={"FAAS_API_KEY": "s3cret"})
    url = stack.url + "/deploy?name=guarded&lang=python"
    status, body, headers = http("POST", url, b"print('in')")
    assert status == 401 and "API key" in body["error"]
    status, body, _ = http("POST", url, b"print('in')", {"Authorization": "Bearer wrong"})
    assert status == 401
    status, body, _ = http("POST", url, b"print('in')", {"Authorization": "Bearer s3cret"})
    assert status == 201, body
    # The key travels in the environment, never on a command line that `ps` shows everyone.
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    assert b"s3cret" not in f.read()
            except OSError:
                pass


def test_the_operator_sets_the_ceiling_of_per_function_limits(start_stack):
    stack = start_stack(workers=1, extra_args=["--max-timeout-ms", "1000", "--max-memory-mb", "64"])
    status, body, _ = http("POST", stack.url + "/deploy?name=slow&lang=python&timeout_ms=2000", b"print(1)")
    assert status == 400 and "1000" in body["error"], body
    status, body, _ = http("POST", stack.url + "/deploy?name=big&lang=python&memory_mb=128", b"print(1)")
    assert status == 400 and "64" in body["error"], body
    status, body, _ = http("POST", stack.url + "/deploy?name=ok&lang=python&timeout_ms=1000&memory_mb=64", b"print(1)")
    assert status == 201 and body["timeout_ms"] == 1000 and body["memory_mb"] == 64, body
    status, body, _ = http("POST", stack.url + "/deploy?name=plain&lang=python", b"print(1)")
    assert status == 201 and body["memory_mb"] == 64  # the default comes down to the ceiling


def test_a_stack_that_cannot_start_says_why_and_leaves_nothing_behind():
    from harness.run.stack import Stack, StackError

    stack = Stack(strategy="NOSUCH", workers=1, ready_timeout=60)
    with pytest.raises(StackError) as failure:
        stack.start()
    assert "NOSUCH" in str(failure.value)  # the balancer's own refusal, passed on
    assert not os.path.exists(stack.dir)


@pytest.mark.parametrize("server", ["gevent", "waitress"])
def test_both_http_servers_serve_the_api(start_stack, server):
    """gevent is the default; --http waitress must keep working: deploy (a compile, which gevent
    runs in a real thread), invoke, read back, unknown routes and oversized bodies as JSON."""
    need_toolchain("c")
    stack = start_stack(workers=1, extra_args=["--http", server])
    deployed = deploy(stack.url, "hello", "c", (EXAMPLES / "hello.c").read_bytes())
    assert deployed["wasm"] is True, deployed
    status, body, _ = invoke(stack.url, "hello", "via %s" % server)
    assert status == 200 and body["output"] == "Hello from FAAS!\nvia %s" % server, body
    status, body, _ = http("GET", stack.url + "/function/hello")
    assert status == 200 and body["lang"] == "c"
    status, body, _ = http("GET", stack.url + "/no/such/route")
    assert status == 404 and body["ok"] is False
    status, body, _ = http("POST", stack.url + "/invoke?fn=hello", b"x" * ((6 << 20) + 1000))
    assert status == 413 and body["ok"] is False, body
