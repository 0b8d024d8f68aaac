"""Per-function configuration through the HTTP API of a real stack: env and secrets (reaching
python, node, php and WASI functions, never answered, never on a command line, never logged,
kept per version), max_concurrency (calls wait in the gateway's queue; 429 when it is full) and
POST /function/NAME/rollback."""

import json
import os
import stat
import threading
import time

import pytest
from needs import need_toolchain
from support import TEST_FUNCTIONS, http, invoke

SECRET = "s3cr3t-0f-the-test-7f1c"      # searched for in answers, logs, files and command lines
DEADLINE_S = 60.0


def deploy_json(url, name, lang, source, **fields):
    body = dict(name=name, lang=lang, code=source.read_text(), **fields)
    return http("POST", url + "/deploy", json.dumps(body), {"Content-Type": "application/json"})


def deployed(url, name, lang, source, **fields):
    status, answer, _ = deploy_json(url, name, lang, source, **fields)
    assert status == 201, answer
    return answer


def wait_for(condition, what, deadline_s=DEADLINE_S):
    """condition()'s first true value, polled until a generous deadline (then the test fails)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("waited %.0f s for %s" % (deadline_s, what))
        time.sleep(0.02)


@pytest.fixture(scope="module")
def stack():
    from support import started
    stack = started(strategy="RR", workers=2)
    yield stack
    stack.close()


@pytest.mark.parametrize("lang,source", [("python", "env.py"), ("js", "env.js")])
def test_env_and_secrets_reach_an_interpreted_function(stack, lang, source):
    need_toolchain(lang)
    name = "env-" + lang
    deployed(stack.url, name, lang, TEST_FUNCTIONS / source,
             env={"GREETING": "hello world", "EMPTY": ""}, secrets={"API_TOKEN": SECRET})
    for _ in range(3):      # the first call starts the warm interpreter, the next ones reuse it
        status, answer, _ = invoke(stack.url, name)
        assert status == 200, answer
        env = json.loads(answer["output"])
        assert env["GREETING"] == "hello world" and env["EMPTY"] == "" and env["API_TOKEN"] == SECRET
        assert "PATH" in env


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
@pytest.mark.parametrize("lang,ext", [("python", "py"), ("js", "js"), ("php", "php")])
def test_an_interpreted_function_sees_path_and_its_own_variables_and_nothing_else(stack, lang, ext, reuse):
    """The contract's empty environment, as the process has it and as a program it starts gets
    it: not bwrap's PWD, not python3's LC_CTYPE, not the list of names the worker tells its
    helper. Cold and warm alike (the first call starts the helper, the next ones reuse it)."""
    need_toolchain(lang)
    name = "whole-env-%s-%s" % (lang, "reuse" if reuse else "fresh")
    deployed(stack.url, name, lang, TEST_FUNCTIONS / ("whole_env." + ext), reuse=reuse,
             env={"GREETING": "hi"}, secrets={"API_TOKEN": SECRET})
    expected = ["API_TOKEN", "GREETING", "PATH"]
    for _ in range(3):
        status, answer, _ = invoke(stack.url, name)
        assert status == 200 and answer["ok"], answer
        seen = json.loads(answer["output"])
        assert seen["process"] == expected and seen["child"] == expected, seen
        if lang == "php":
            assert seen["env"] == expected and seen["server"] == expected, seen


def test_env_and_secrets_reach_a_php_function(stack):
    need_toolchain("php")
    code = '<?php echo json_encode(["G" => getenv("GREETING"), "S" => getenv("API_TOKEN")]);\n'
    status, answer, _ = http("POST", stack.url + "/deploy", json.dumps(
        {"name": "env-php", "lang": "php", "code": code, "env": {"GREETING": "hi"}, "secrets": {"API_TOKEN": SECRET}}),
        {"Content-Type": "application/json"})
    assert status == 201, answer
    for _ in range(2):
        status, answer, _ = invoke(stack.url, "env-php")
        assert status == 200, answer
        assert json.loads(answer["output"]) == {"G": "hi", "S": SECRET}


def test_env_and_secrets_reach_a_wasi_function(stack):
    need_toolchain("c")
    deployed(stack.url, "env-c", "c", TEST_FUNCTIONS / "env.c", env={"GREETING": "hello"},
             secrets={"API_TOKEN": SECRET})
    status, answer, _ = invoke(stack.url, "env-c")
    assert status == 200, answer
    assert sorted(answer["output"].splitlines()) == ["API_TOKEN=" + SECRET, "GREETING=hello"]
    # Without configuration, the environment stays empty (the contract).
    deployed(stack.url, "env-c-bare", "c", TEST_FUNCTIONS / "env.c")
    status, answer, _ = invoke(stack.url, "env-c-bare")
    assert status == 200 and answer["output"] == "", answer


def test_secrets_are_never_answered_and_stored_for_root_only(stack):
    answer = deployed(stack.url, "keeper", "python", TEST_FUNCTIONS / "env.py",
                      env={"MODE": "test"}, secrets={"API_TOKEN": SECRET, "DB_PASSWORD": SECRET + "-db"})
    assert answer["secrets"] == ["API_TOKEN", "DB_PASSWORD"] and answer["env"] == {"MODE": "test"}
    assert SECRET not in json.dumps(answer)
    for path in ("/function/keeper", "/functions", "/function/%s" % answer["id"]):
        status, got, _ = http("GET", stack.url + path)
        assert status == 200 and SECRET not in json.dumps(got), got
    status, got, _ = http("GET", stack.url + "/function/keeper")
    assert got["secrets"] == ["API_TOKEN", "DB_PASSWORD"] and got["env"] == {"MODE": "test"}
    directory = os.path.join(stack.functions_dir, answer["id"])
    info = os.stat(os.path.join(directory, "secrets.json"))
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    with open(os.path.join(directory, "metadata.json")) as f:
        assert SECRET not in f.read()
    status, ran, _ = invoke(stack.url, "keeper")
    assert status == 200 and json.loads(ran["output"])["DB_PASSWORD"] == SECRET + "-db"
    # Not in what the gateway keeps of its calls either.
    status, calls, _ = http("GET", stack.url + "/function/keeper/invocations")
    assert status == 200 and SECRET not in json.dumps(calls)


def _processes():
    """(pid, cmdline, environ) of every process we may read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/environ" % entry, "rb") as f:
                environ = f.read()
        except OSError:
            continue
        yield int(entry), cmdline, environ


@pytest.mark.parametrize("lang", ["python", "js"])
def test_secrets_are_on_no_command_line_while_the_function_runs(stack, lang):
    need_toolchain(lang)
    secret = "%s-cmdline-%s" % (SECRET, lang)
    name = "sleeper-" + lang
    source = TEST_FUNCTIONS / "sleep.py"
    code = source.read_text() if lang == "python" else (
        "const s = Number(require('fs').readFileSync(0, 'utf8') || '0.2');\n"
        "setTimeout(() => console.log('slept'), s * 1000);\n")
    status, answer, _ = http("POST", stack.url + "/deploy", json.dumps(
        {"name": name, "lang": lang, "code": code, "secrets": {"API_TOKEN": secret}, "timeout_ms": 30000}),
        {"Content-Type": "application/json"})
    assert status == 201, answer
    status, accepted, _ = http("POST", stack.url + "/invoke?fn=%s&async=1" % name, json.dumps({"input": "3"}))
    assert status == 202, accepted
    seen_cmdlines = []

    def running_with_the_secret():
        found = []
        for pid, cmdline, environ in _processes():
            seen_cmdlines.append(cmdline)
            if secret.encode() in environ:
                found.append(pid)
        return found

    holders = wait_for(running_with_the_secret, "a process of %s holding its secret in its environment" % name)
    assert os.getpid() not in holders
    assert seen_cmdlines and not [c for c in seen_cmdlines if secret.encode() in c]
    # The call ends (it ran, and leaves the module's workers free for the next tests).
    wait_for(lambda: http("GET", stack.url + "/call/%s" % accepted["call_id"])[1].get("state") == "done",
             "the sleeping call to end")
    with open(os.path.join(stack.dir, "stack.log"), "rb") as f:
        assert secret.encode() not in f.read()


@pytest.mark.parametrize("env,secrets,status,words", [
    ({"PATH": "/x"}, None, 400, "reserved"),
    ({"PWD": "/x"}, None, 400, "reserved"),
    ({"MINIFAAS_ENV": "PATH"}, None, 400, "reserved"),
    ({"LD_PRELOAD": "/x.so"}, None, 400, "reserved"),
    (None, {"FAAS_API_KEY": "x"}, 400, "reserved"),
    ({"NODE_OPTIONS": "--inspect"}, None, 400, "reserved"),
    ({"PYTHONPATH": "/x"}, None, 400, "reserved"),
    ({"1BAD": "x"}, None, 400, "invalid env name"),
    ({"A-B": "x"}, None, 400, "invalid env name"),
    ({"A": 1}, None, 400, "JSON string"),
    ({"A": "x\u0000y"}, None, 400, "NUL"),
    ({"A": "x"}, {"A": "y"}, 400, "both in env and in secrets"),
    ({"V%d" % i: "x" for i in range(65)}, None, 400, "the limit is 64"),
    ({"BIG": "x" * (16 * 1024 + 1)}, None, 413, "the limit is 16384"),
    ("A=1", None, 400, "JSON object"),
])
def test_bad_env_and_secrets_are_refused_with_a_reason(stack, env, secrets, status, words):
    fields = {}
    if env is not None:
        fields["env"] = env
    if secrets is not None:
        fields["secrets"] = secrets
    got, answer, _ = deploy_json(stack.url, "refused", "python", TEST_FUNCTIONS / "env.py", **fields)
    assert got == status and words in answer["error"], answer
    assert "x" * 100 not in answer["error"]     # a value is never echoed back


def test_the_query_form_takes_env_and_refuses_secrets(stack):
    code = (TEST_FUNCTIONS / "env.py").read_bytes()
    status, answer, _ = http("POST", stack.url + "/deploy?name=q-secret&lang=python&secret=API_TOKEN=x", code)
    assert status == 400 and "JSON form" in answer["error"], answer
    status, answer, _ = http("POST", stack.url + "/deploy?name=q-env&lang=python&env=A=1&env=B=two%3Dthree", code)
    assert status == 201 and answer["env"] == {"A": "1", "B": "two=three"}, answer
    status, answer, _ = invoke(stack.url, "q-env")
    assert status == 200 and json.loads(answer["output"])["B"] == "two=three"
    status, answer, _ = http("PUT", stack.url + "/function/q-env?secrets=x", code)
    assert status == 400 and "JSON form" in answer["error"], answer


def test_versions_keep_their_own_env_and_secrets(stack):
    first = deployed(stack.url, "versioned", "python", TEST_FUNCTIONS / "env.py",
                     env={"STAGE": "one"}, secrets={"TOKEN": "first-secret"})
    code = (TEST_FUNCTIONS / "env.py").read_text()
    # An update without env or secrets keeps both.
    status, second, _ = http("PUT", stack.url + "/function/versioned", code.encode())
    assert status == 200 and second["env"] == {"STAGE": "one"} and second["secrets"] == ["TOKEN"], second
    status, answer, _ = invoke(stack.url, second["id"])
    assert json.loads(answer["output"])["TOKEN"] == "first-secret"
    # One that gives them replaces each set given.
    status, third, _ = http("PUT", stack.url + "/function/versioned", json.dumps(
        {"code": code, "env": {"STAGE": "three"}, "secrets": {"OTHER": "third-secret"}}),
        {"Content-Type": "application/json"})
    assert status == 200 and third["secrets"] == ["OTHER"], third
    status, answer, _ = invoke(stack.url, "versioned")
    env = json.loads(answer["output"])
    assert env["STAGE"] == "three" and env["OTHER"] == "third-secret" and "TOKEN" not in env
    # The old version, by its id, still runs with its own.
    status, answer, _ = invoke(stack.url, first["id"])
    env = json.loads(answer["output"])
    assert env["STAGE"] == "one" and env["TOKEN"] == "first-secret" and "OTHER" not in env


def test_rollback_makes_an_old_version_current_again_as_a_new_version(stack, tmp_path):
    code_one, code_two = "import os\nprint('one', os.environ['S'])\n", "import os\nprint('two', os.environ['S'])\n"
    status, first, _ = http("POST", stack.url + "/deploy", json.dumps(
        {"name": "rolled", "lang": "python", "code": code_one, "timeout_ms": 4000, "secrets": {"S": "a"}}),
        {"Content-Type": "application/json"})
    assert status == 201, first
    status, second, _ = http("PUT", stack.url + "/function/rolled", json.dumps(
        {"code": code_two, "timeout_ms": 3000, "secrets": {"S": "b"}}), {"Content-Type": "application/json"})
    assert status == 200, second
    assert invoke(stack.url, "rolled")[1]["output"] == "two b\n"
    status, rolled, _ = http("POST", stack.url + "/function/rolled/rollback?version=1")
    assert status == 200, rolled
    assert rolled["version"] == 3 and rolled["rolled_back_from"] == 1 and rolled["previous"] == second["id"]
    assert rolled["timeout_ms"] == 4000 and rolled["secrets"] == ["S"]
    assert invoke(stack.url, "rolled")[1]["output"] == "one a\n"
    status, got, _ = http("GET", stack.url + "/function/rolled")
    assert got["code"] == code_one and [v["version"] for v in got["versions"]] == [3, 2, 1]
    # By id too; and the refusals.
    status, again, _ = http("POST", stack.url + "/function/rolled/rollback?version=%s" % second["id"])
    assert status == 200 and again["version"] == 4 and invoke(stack.url, "rolled")[1]["output"] == "two b\n"
    status, answer, _ = http("POST", stack.url + "/function/rolled/rollback?version=9")
    assert status == 404 and "no version 9" in answer["error"], answer
    status, answer, _ = http("POST", stack.url + "/function/rolled/rollback")
    assert status == 400 and "version=N" in answer["error"], answer
    status, answer, _ = http("POST", stack.url + "/function/nothing-here/rollback?version=1")
    assert status == 404, answer


def test_rollback_of_a_compiled_function_compiles_nothing(stack):
    need_toolchain("c")
    first = deployed(stack.url, "rolled-c", "c", TEST_FUNCTIONS / "env.c", env={"V": "1"})
    status, _, _ = http("PUT", stack.url + "/function/rolled-c", json.dumps(
        {"code": (TEST_FUNCTIONS / "env.c").read_text(), "env": {"V": "2"}}), {"Content-Type": "application/json"})
    assert status == 200
    status, rolled, _ = http("POST", stack.url + "/function/rolled-c/rollback?version=1")
    assert status == 200 and rolled["wasm"] and rolled["sha256"] == first["sha256"], rolled
    assert rolled["compile_ms"] == first["compile_ms"]      # copied, not measured again
    assert invoke(stack.url, "rolled-c")[1]["output"] == "V=1\n"


def test_max_concurrency_runs_one_call_at_a_time_and_loses_none(stack):
    answer = deployed(stack.url, "one-at-a-time", "python", TEST_FUNCTIONS / "sleep.py", max_concurrency=1)
    assert answer["max_concurrency"] == 1
    results = []

    def call():
        results.append(invoke(stack.url, "one-at-a-time", "0.3"))

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 5 and all(status == 200 for status, _, _ in results), results
    spans = sorted((json.loads(a["output"])["start"], json.loads(a["output"])["end"]) for _, a, _ in results)
    # Each call started after the one before it had ended: never two at once, whatever the timing.
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans
    status, view, _ = http("GET", stack.url + "/function/one-at-a-time/concurrency")
    assert status == 200 and view["in_flight"] == 0 and view["waiting"] == 0 and view["refused"] == 0, view


def test_a_full_queue_answers_429_with_retry_after(start_stack):
    stack = start_stack(workers=2)
    deployed(stack.url, "narrow", "python", TEST_FUNCTIONS / "sleep.py", max_concurrency=1, max_queue=1,
             timeout_ms=60000)

    def view():
        return http("GET", stack.url + "/function/narrow/concurrency")[1]

    # One call running (async: it holds its turn until it ends, long after this test's checks) ...
    status, first, _ = http("POST", stack.url + "/invoke?fn=narrow&async=1", json.dumps({"input": "50"}))
    assert status == 202, first
    wait_for(lambda: view()["in_flight"] == 1, "the first call to be admitted")
    # ... one waiting ...
    status, second, _ = http("POST", stack.url + "/invoke?fn=narrow&async=1", json.dumps({"input": "0"}))
    assert status == 202, second
    wait_for(lambda: view()["waiting"] == 1, "the second call to wait in the queue")
    # ... so the third finds the queue full.
    status, answer, headers = invoke(stack.url, "narrow", "0")
    assert status == 429 and headers["Retry-After"] == "1", answer
    assert answer["kind"] == "overloaded" and "max_queue" in answer["error"], answer
    assert view() == {"ok": True, "name": "narrow", "in_flight": 1, "waiting": 1, "refused": 1,
                      "max_concurrency": 1, "max_queue": 1}
    # The waiting call is still queued, not lost.
    status, state, _ = http("GET", stack.url + "/call/%s" % second["call_id"])
    assert status == 200 and state["state"] != "done", state


def test_max_concurrency_settings_are_checked_and_carried_over(stack):
    status, answer, _ = deploy_json(stack.url, "bad-mc", "python", TEST_FUNCTIONS / "env.py", max_concurrency=-1)
    assert status == 400 and "max_concurrency" in answer["error"], answer
    status, answer, _ = deploy_json(stack.url, "bad-mq", "python", TEST_FUNCTIONS / "env.py", max_queue="many")
    assert status == 400 and "max_queue" in answer["error"], answer
    code = (TEST_FUNCTIONS / "env.py").read_bytes()
    status, answer, _ = http("POST", stack.url + "/deploy?name=mc&lang=python&max_concurrency=3&max_queue=7", code)
    assert status == 201 and answer["max_concurrency"] == 3 and answer["max_queue"] == 7, answer
    status, answer, _ = http("PUT", stack.url + "/function/mc", code)
    assert status == 200 and answer["max_concurrency"] == 3 and answer["max_queue"] == 7, answer
    status, answer, _ = http("PUT", stack.url + "/function/mc?max_concurrency=0", code)
    assert status == 200 and "max_concurrency" not in answer, answer


def test_async_calls_waiting_for_their_turn_hold_up_no_other_function(start_stack):
    # Eight async calls of a function limited to one at a time: one runs (for 50 s), seven wait for
    # their turn. The gateway runs 8 async calls at once (calls.ASYNC_THREADS): the seven waiting
    # must not hold those runners, or every other function's async calls would wait behind them.
    stack = start_stack(workers=2)
    deployed(stack.url, "gated", "python", TEST_FUNCTIONS / "sleep.py", max_concurrency=1, max_queue=20,
             timeout_ms=60000)
    deployed(stack.url, "free", "python", TEST_FUNCTIONS / "sleep.py")
    gated = []
    for _ in range(8):
        status, answer, _ = http("POST", stack.url + "/invoke?fn=gated&async=1", json.dumps({"input": "50"}))
        assert status == 202, answer
        gated.append(answer["call_id"])
    wait_for(lambda: http("GET", stack.url + "/function/gated/concurrency")[1]["waiting"] == 7,
             "seven calls waiting for their turn")
    status, free, _ = http("POST", stack.url + "/invoke?fn=free&async=1", json.dumps({"input": "0"}))
    assert status == 202, free

    def free_done():
        state = http("GET", stack.url + "/call/%s" % free["call_id"])[1]
        return state if state["state"] == "done" else None

    # Well before the running gated call ends (50 s), the other function's call has run.
    state = wait_for(free_done, "the other function's async call to run", deadline_s=40)
    assert state["ok"] is True and state["status"] == 200, state
    first = http("GET", stack.url + "/call/%s" % gated[0])[1]
    assert first["state"] != "done", first
