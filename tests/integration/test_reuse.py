"""Functions deployed with reuse=true (reference/worker/warm/reuse.py): a long-lived interpreter per
function and worker, whose globals survive between calls, while each call's input, output and
exit status stay its own, a crash or a limit ends only that call, functions never see each
other, and the sandbox holds as for fresh calls. Structure, not timing.

The worker-level tests run the jobs in a worker-like driver process (test_runtimes.run_jobs);
the last ones go through a whole stack with one worker, so every call meets the same resident.
"""

import json

import pytest
from support import http, invoke
from test_isolation import PROBES, _accepted, drive, job, listener  # noqa: F401  (listener: a fixture)
from test_runtimes import EXAMPLES, FUNCTIONS, make_function, run_jobs

from reference.worker.sandbox import isolation

EXT = {"python": "py", "js": "js", "php": "php"}
SLOW_OK_MS = 30000      # a call that must not time out, even on a loaded machine


def _calls(fn, lang, inputs, **job_fields):
    return [dict(fn_dir=fn, lang=lang, input=data, reuse=True, timeout_ms=SLOW_OK_MS, **job_fields) for data in inputs]


def _pid(result):
    return result["extra"].get("runtime_pid")


COUNTERS = {
    # counter.py sets its global back to 0 itself: what survives is its file and the module attribute.
    "python": ([b"1 False False\n"] * 3, [b"1 False False\n", b"1 True True\n", b"1 True True\n"]),
    "js": ([b"1 false\n"] * 3, [b"1 false\n", b"2 true\n", b"3 true\n"]),
    "php": ([b"1 false\n"] * 3, [b"1 false\n", b"2 true\n", b"3 true\n"]),
}


@pytest.mark.parametrize("lang", sorted(COUNTERS))
def test_reuse_off_is_fresh_every_call_and_reuse_on_keeps_the_state(tmp_path, lang):
    fn = make_function(tmp_path, "counter", lang, FUNCTIONS / ("counter." + EXT[lang]))
    fresh_expected, reused_expected = COUNTERS[lang]
    fresh = run_jobs(*[dict(c, reuse=False) for c in _calls(fn, lang, [b""] * 3)])
    leftovers = []
    reused = run_jobs(*_calls(fn, lang, [b""] * 3), leftovers=leftovers)
    assert [r["stdout"] for r in fresh] == fresh_expected, fresh
    assert [r["stdout"] for r in reused] == reused_expected, reused
    assert all("reuse" not in r["extra"] for r in fresh)
    # One interpreter served the three calls, and it is one the worker keeps.
    assert [r["cold"] for r in reused] == [True, False, False]
    assert _pid(reused[0]) and len({_pid(r) for r in reused}) == 1
    assert all(r["warm_pids"] == [_pid(reused[0])] and r["children_after"] == [] for r in reused)
    assert leftovers == []      # the worker's close stopped it


@pytest.mark.parametrize("lang,file,inputs,expected", [
    ("python", "greet.py", [b"Ada", b"Bob", b""], [b"Hello, Ada!\n", b"Hello, Bob!\n", b"Hello, world!\n"]),
    ("js", "add.js", [b"[1, 2]", b'{"a": 3, "b": 4}', b""], [b'{"sum":3}\n', b'{"sum":7}\n', b'{"sum":0}\n']),
    ("php", "hello.php", [b"in", b"", b"out"], [b"Hello from PHP!\nin\n", b"Hello from PHP!\n",
                                                 b"Hello from PHP!\nout\n"]),
], ids=["python", "js", "php"])
def test_each_call_reads_its_own_input_and_writes_its_own_output(tmp_path, lang, file, inputs, expected):
    fn = make_function(tmp_path, "fn", lang, EXAMPLES / file)
    results = run_jobs(*_calls(fn, lang, inputs))
    assert [(r["stdout"], r["stderr"], r["exit_code"], r["error"]) for r in results] == \
        [(e, b"", 0, None) for e in expected], results
    assert len({_pid(r) for r in results}) == 1


# Counts its calls in a global; "crash" raises, "exit" exits 3, "loop" never ends.
FAULTY = {
    "python": b"import sys\nd = sys.stdin.read()\nif d == 'crash':\n    raise ValueError('boom')\n"
              b"if d == 'exit':\n    sys.exit(3)\nif d == 'loop':\n    while True:\n        pass\n"
              b"n = globals().get('n', 0) + 1\nprint(n, d)\n",
    "js": b"const d = require('fs').readFileSync(0, 'utf8');\nif (d === 'crash') throw new Error('boom');\n"
          b"if (d === 'exit') process.exit(3);\nif (d === 'loop') for (;;) {}\n"
          b"globalThis.n = (globalThis.n || 0) + 1;\nconsole.log(globalThis.n, d);\n",
    "php": b"<?php\n$d = file_get_contents('php://stdin');\nif ($d === 'crash') throw new Exception('boom');\n"
           b"if ($d === 'exit') exit(3);\nif ($d === 'loop') for (;;) {}\n"
           b"$GLOBALS['n'] = ($GLOBALS['n'] ?? 0) + 1;\necho $GLOBALS['n'], ' ', $d, \"\\n\";\n",
}


@pytest.mark.parametrize("lang", sorted(FAULTY))
def test_a_crash_an_exit_or_a_timeout_is_that_calls_error_and_the_next_call_works(tmp_path, lang):
    source = tmp_path / ("faulty." + EXT[lang])
    source.write_bytes(FAULTY[lang])
    fn = make_function(tmp_path, "faulty", lang, source)
    steps = _calls(fn, lang, [b"a", b"crash", b"b", b"exit", b"c"])
    steps.append(dict(steps[0], input=b"loop", timeout_ms=500))
    steps.append(dict(steps[0], input=b"d"))
    a, crash, b, exit_, c, loop, d = run_jobs(*steps)
    assert a["stdout"] == b"1 a\n" and a["exit_code"] == 0, a
    assert crash["exit_code"] != 0 and b"boom" in crash["stderr"] and crash["stdout"] == b"", crash
    assert exit_["exit_code"] == 3 and exit_["stdout"] == b"", exit_
    # Python catches its exceptions and SystemExit in the same interpreter; node and php end it.
    if lang == "python":
        assert (b["stdout"], c["stdout"]) == (b"2 b\n", b"3 c\n"), (b, c)
        assert _pid(a) == _pid(crash) == _pid(b) == _pid(c)
    else:
        assert (b["stdout"], c["stdout"]) == (b"1 b\n", b"1 c\n"), (b, c)
        assert b["cold"] and c["cold"] and len({_pid(a), _pid(b), _pid(c)}) == 3
    assert loop["error"] == "timeout" and "500 ms" in loop["message"], loop
    # After the timeout a new interpreter: the count starts again, nothing is left running.
    assert d["stdout"] == b"1 d\n" and d["cold"] and _pid(d) != _pid(loop), d
    assert all(r["children_after"] == [] for r in (crash, exit_, loop, d))
    assert d["warm_pids"] == [_pid(d)]


@pytest.mark.parametrize("lang", sorted(EXT))
def test_running_out_of_memory_ends_the_interpreter_and_the_next_call_starts_afresh(tmp_path, lang):
    hog = make_function(tmp_path, "hog", lang, FUNCTIONS / ("memhog." + EXT[lang]))
    first, second = run_jobs(*_calls(hog, lang, [b"", b""], memory_mb=64))
    for r in (first, second):
        assert r["error"] == "memory" and r["cold"] is True, r
        assert r["children_after"] == [] and r["warm_pids"] == []
    assert _pid(first) != _pid(second)


def test_a_limit_on_output_holds_and_the_next_call_has_only_its_own(tmp_path):
    source = tmp_path / "big.py"
    source.write_bytes(b"import sys\nd = sys.stdin.read()\nprint(d * (1000 if d == 'x' else 1))\n")
    fn = make_function(tmp_path, "big", "python", source)
    big, small = run_jobs(*_calls(fn, "python", [b"x", b"y"], output_limit=100))
    assert big["truncated"] is True and big["stdout"] == b"x" * 100, big
    assert small["truncated"] is False and small["stdout"] == b"y\n", small
    assert _pid(big) == _pid(small)


def test_two_reuse_functions_never_see_each_others_state(tmp_path):
    one = make_function(tmp_path, "one", "js", FUNCTIONS / "counter.js")
    two = make_function(tmp_path, "two", "js", FUNCTIONS / "counter.js")
    py_one = make_function(tmp_path, "py_one", "python", FUNCTIONS / "counter.py")
    py_two = make_function(tmp_path, "py_two", "python", FUNCTIONS / "counter.py")
    steps = [dict(fn_dir=fn, lang=lang, reuse=True, timeout_ms=SLOW_OK_MS)
             for fn, lang in [(one, "js"), (two, "js"), (one, "js"), (two, "js"),
                              (py_one, "python"), (py_two, "python"), (py_one, "python")]]
    r = run_jobs(*steps)
    assert [x["stdout"] for x in r[:4]] == [b"1 false\n", b"1 false\n", b"2 true\n", b"2 true\n"], r
    assert [x["stdout"] for x in r[4:]] == [b"1 False False\n", b"1 False False\n", b"1 True True\n"], r
    assert _pid(r[0]) == _pid(r[2]) != _pid(r[1]) == _pid(r[3])
    assert _pid(r[4]) == _pid(r[6]) != _pid(r[5])


# "start" starts a detached sleep and keeps its pid in a global; every call says how that
# process is: R, S or D (running, sleeping, in a wait it cannot be woken from: a sleep just
# exec'd may still be paging in), Z (killed, not yet reaped by us) or gone.
LEFTOVER = (b"import subprocess, sys\n"
            b"if sys.stdin.read() == 'start':\n"
            b"    child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            b"try:\n"
            b"    with open('/proc/%d/stat' % child.pid) as f:\n"
            b"        print(f.read().rsplit(')', 1)[1].split()[0])\n"
            b"except OSError:\n"
            b"    print('gone')\n")


def test_what_a_call_leaves_running_is_killed_before_the_next_call(tmp_path):
    source = tmp_path / "leftover.py"
    source.write_bytes(LEFTOVER)
    fn = make_function(tmp_path, "leftover", "python", source)
    start, check = run_jobs(*_calls(fn, "python", [b"start", b"check"]))
    assert start["stdout"] in (b"R\n", b"S\n", b"D\n") and start["children_after"] == [], start  # it started one
    assert check["stdout"] in (b"Z\n", b"gone\n") and _pid(check) == _pid(start), check     # dead, same sandbox


@pytest.mark.skipif(not isolation.sandboxed(), reason="needs the bubblewrap sandbox")
@pytest.mark.parametrize("lang", sorted(PROBES))
def test_the_sandbox_holds_with_reuse_on(tmp_path, lang, listener):  # noqa: F811
    """A hostile function with reuse on, twice in its resident, against another function's
    resident: it reaches none of its processes nor the port, and the victim keeps its state."""
    victim = make_function(tmp_path, "victim", "js", FUNCTIONS / "counter.js")
    attacker = make_function(tmp_path, "attacker", lang, FUNCTIONS / PROBES[lang])
    port = listener.getsockname()[1]
    attack = dict(job(attacker, lang, reuse=True, timeout_ms=SLOW_OK_MS), attack=dict(victim="victim", ports=[port]))
    steps = [job(victim, "js", reuse=True, timeout_ms=SLOW_OK_MS), attack, attack,
             job(victim, "js", reuse=True, timeout_ms=SLOW_OK_MS)]
    first, hit, again, last = drive(*steps)["results"]
    assert json.loads(hit["input"])["pids"], hit      # the victim's resident was there to attack
    for r in (hit, again):
        got = json.loads(r["stdout"])
        assert all(got[k] == [] for k in got if k != "visible"), got
        visible = got.get("visible", [])      # the python probe lists what it sees
        assert not any("pytest" in c or "reference" in c or "counter" in c for c in visible), got
        assert len(visible) <= 2, got
    assert _pid(hit) == _pid(again)
    assert not _accepted(listener)
    assert (first["stdout"], last["stdout"]) == (b"1 false\n", b"2 true\n"), last
    assert _pid(first) == _pid(last) and last["cold"] is False


# --- through a whole stack --------------------------------------------------------------

def _deploy(url, query, body, content_type=None):
    headers = {"Content-Type": content_type} if content_type else {}
    return http("POST", "%s/deploy?%s" % (url, query), body, headers)


def test_reuse_is_asked_at_deploy_kept_per_version_shown_and_honoured(start_stack):
    stack = start_stack(workers=1)
    url = stack.url
    counter = (FUNCTIONS / "counter.js").read_text()
    status, answer, _ = _deploy(url, "name=fresh&lang=js", counter)
    assert status == 201 and answer["reuse"] is False, answer
    status, answer, _ = _deploy(url, "name=kept&lang=js&reuse=true", counter)
    assert status == 201 and answer["reuse"] is True, answer
    status, answer, _ = _deploy(url, "", json.dumps(dict(name="kept_json", lang="js", code=counter, reuse=True)),
                                "application/json")
    assert status == 201 and answer["reuse"] is True, answer
    assert http("GET", url + "/function/kept")[1]["reuse"] is True
    assert http("GET", url + "/function/fresh")[1]["reuse"] is False
    outputs = {name: [invoke(url, name)[1]["output"] for _ in range(3)] for name in ("fresh", "kept", "kept_json")}
    assert outputs["fresh"] == ["1 false\n"] * 3, outputs
    assert outputs["kept"] == outputs["kept_json"] == ["1 false\n", "2 true\n", "3 true\n"], outputs
    # A new version keeps the setting unless told otherwise, and starts from nothing.
    status, answer, _ = http("PUT", url + "/function/kept", counter.encode())
    assert status == 200 and answer["reuse"] is True and answer["version"] == 2, answer
    assert invoke(url, "kept")[1]["output"] == "1 false\n"
    status, answer, _ = http("PUT", url + "/function/kept?reuse=false", counter.encode())
    assert status == 200 and answer["reuse"] is False, answer
    assert [invoke(url, "kept")[1]["output"] for _ in range(2)] == ["1 false\n"] * 2
    versions = http("GET", url + "/function/kept")[1]["versions"]
    assert [v["version"] for v in versions][:3] == [3, 2, 1], versions


@pytest.mark.parametrize("query", ["name=page&lang=html&reuse=true", "name=wasm&lang=c&reuse=true",
                                   "name=odd&lang=js&reuse=maybe"])
def test_reuse_is_refused_where_it_means_nothing_or_is_not_a_yes_or_no(shared_stack, query):
    status, answer, _ = _deploy(shared_stack.url, query, "<p>hi</p>" if "html" in query else "int main(){}")
    assert status == 400 and "reuse" in answer["error"], answer
    name = query.split("&")[0].split("=")[1]
    assert http("GET", shared_stack.url + "/function/" + name)[0] == 404


THREADED = (b"import sys, threading, time\n"
            b"n = globals().get('n', 0) + 1\n"
            b"if sys.stdin.read() == 'thread':\n"
            b"    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()\n"
            b"print(n)\n")


def test_a_python_call_that_leaves_a_thread_running_ends_its_interpreter(tmp_path):
    """A daemon thread could write into the next call's output: the interpreter goes with it."""
    source = tmp_path / "threaded.py"
    source.write_bytes(THREADED)
    fn = make_function(tmp_path, "threaded", "python", source)
    one, two, three = run_jobs(*_calls(fn, "python", [b"", b"thread", b""]))
    assert [r["stdout"] for r in (one, two, three)] == [b"1\n", b"2\n", b"1\n"]
    assert two["exit_code"] == 0 and two["error"] is None and _pid(one) == _pid(two), two
    assert three["cold"] and _pid(three) != _pid(two) and two["children_after"] == []


def test_a_resident_sees_its_functions_env_and_a_new_env_gets_a_new_resident(tmp_path):
    fn = make_function(tmp_path, "env", "js", FUNCTIONS / "env.js")
    one, same, other = run_jobs(*[dict(c, env=env) for c, env in zip(
        _calls(fn, "js", [b""] * 3), [{"GREETING": "a"}, {"GREETING": "a"}, {"GREETING": "b"}])])
    assert b"a" in one["stdout"] and one["stdout"] == same["stdout"] and b"b" in other["stdout"], (one, other)
    assert _pid(one) == _pid(same) != _pid(other) and other["cold"]
