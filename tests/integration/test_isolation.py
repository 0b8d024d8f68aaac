"""The isolation table of DESIGN.md, tried as an attacker would (issue 14): hostile Python, node
and PHP functions against other functions' processes, files, output and the loopback, daemons,
fork storms, memory across children, /dev/shm, the rlimits behind the cgroup, and a hijacked fork
server redirecting the kill.

Each job runs in a worker-like driver process, as in test_runtimes; between jobs the driver
looks at the machine (processes left with a marker, the processes of a function's uid) and can
build the next job's input from it. Needs root, bubblewrap and cgroups: skipped with the
reason otherwise, failed instead under FAAS_REQUIRE_TOOLCHAINS=1.
"""

import base64
import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import uuid

import pytest
from needs import missing, need_toolchain
from test_runtimes import EXAMPLES, FUNCTIONS, make_function

from reference.functions import toolchains
from reference.functions.languages import LANGUAGES
from reference.wire.errors import CompileError
from reference.worker.sandbox import isolation
from reference.worker.sandbox.process import CALL_PIDS_MAX
from support import ROOT

DRIVER = r"""
import base64, json, os, sys
from reference.wire.jobs import Job
from reference.worker.runtimes import WorkerRuntimes
from reference.worker.sandbox import isolation
from reference.worker.sandbox.process import _stray_children, own_children

def uid_pids(fn_id):
    uid, found = isolation.uid_for(fn_id), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/status" % entry) as f:
                    if any(l.split()[1] == str(uid) for l in f if l.startswith("Uid:")):
                        found.append(int(entry))
            except OSError:
                pass
    return found

def marked(marker):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found

def spare_files(runtimes, lang, fn_id):
    # The code file of the interpreter started ahead for fn_id: in its sandbox's own tmpfs,
    # which the host reaches only through /proc/PID/root.
    runtime = runtimes.runtime(lang)
    spare = runtime.pool.procs.get(fn_id)
    if spare is None:
        return []
    if not hasattr(spare, "call_dir"):
        # A fork server (php) keeps the code in memory: its calls' tmpfs, where the next call
        # writes it, and the descriptor it was read from are what there is to aim at.
        return [path % pid for pid in uid_pids(fn_id) for path in ("/proc/%d/root/calls/code.php", "/proc/%d/fd/0")]
    if spare.call_dir is not None:
        return [os.path.join(spare.call_dir, "code." + runtime.ext)]
    return ["/proc/%d/root/call/code.%s" % (pid, runtime.ext) for pid in uid_pids(fn_id)
            if os.path.exists("/proc/%d/root/call/code.%s" % (pid, runtime.ext))]

warm, marker = sys.argv[1] == "warm", sys.argv[2]
runtimes = WorkerRuntimes(warm=warm)
if len(sys.argv) > 3:       # a fork server helper to use instead of ours (a hijacked one)
    runtimes.runtime("python").helper = sys.argv[3]
results = []
for step in json.load(sys.stdin):
    spec = step["job"]
    spec["input"] = base64.b64decode(spec["input"])
    attack = step.get("attack")
    if attack:
        task = {"pids": uid_pids(attack["victim"]) + attack.get("pids", []), "ports": attack.get("ports", []),
                "paths": spare_files(runtimes, attack["lang"], attack["victim"]) if attack.get("lang") else []}
        spec["input"] = json.dumps(task).encode()
    out = runtimes.run(Job(**spec))
    results.append(dict(exit_code=out.exit_code, stdout=base64.b64encode(out.stdout).decode(),
                        stderr=base64.b64encode(out.stderr).decode(), error=out.error, message=out.message,
                        cold=out.cold, extra=out.extra, exec_ms=out.exec_ms, input=spec["input"].decode(errors="replace"),
                        marked=marked(marker), strays=_stray_children()))
runtimes.close()
json.dump(dict(results=results, marked=marked(marker)), sys.stdout)
"""


def _need_isolation():
    info = isolation.describe()
    if info["missing"]:
        reason = "no full isolation here (%s): %s" % (info["isolation"], "; ".join(info["missing"]))
        missing(reason)


_WEAK_OK = set()


def weak_ok(test):
    """A test that runs whatever the isolation here (it forces the weak path itself)."""
    _WEAK_OK.add(test.__name__)
    return test


@pytest.fixture(autouse=True)
def strong_isolation(request):
    if request.function.__name__ not in _WEAK_OK:
        _need_isolation()


REPORT = r"""
import json
from reference.worker.sandbox import isolation
info = isolation.describe()
try:
    isolation.require()
    refused = None
except SystemExit as exc:
    refused = str(exc)
print(json.dumps(dict(info=info, refused=refused, summary=isolation.summary())))
"""


def _report(**env):
    proc = subprocess.run([sys.executable, "-c", REPORT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@weak_ok
def test_without_bubblewrap_or_cgroups_the_platform_says_what_it_lacks_and_require_refuses():
    weak = _report(FAAS_NO_BWRAP="1", FAAS_NO_CGROUPS="1")
    assert weak["info"]["isolation"] == "rlimits-only"
    assert len(weak["info"]["missing"]) == 2 and "bubblewrap" in weak["info"]["missing"][0]
    assert "WEAK" in weak["summary"] and "rlimits-only" in weak["summary"]
    assert weak["refused"] and "--require-isolation" in weak["refused"] and "bubblewrap" in weak["refused"]
    half = _report(FAAS_NO_CGROUPS="1")
    if half["info"]["isolation"] == "bubblewrap":
        assert half["refused"] and "cgroups" in half["refused"]


def test_with_everything_there_require_lets_the_platform_start():
    strong = _report()
    assert strong["refused"] is None and strong["info"]["missing"] == []
    assert strong["summary"] == "isolation: " + strong["info"]["isolation"]


def test_minifaas_languages_reports_the_isolation():
    table = subprocess.run([sys.executable, "-m", "reference", "languages"], capture_output=True, text=True,
                           cwd=ROOT, timeout=600)
    assert table.returncode == 0, table.stderr
    assert "isolation: bubblewrap+cgroup-v" in table.stdout
    rows = json.loads(subprocess.run([sys.executable, "-m", "reference", "languages", "--json"], capture_output=True,
                                     text=True, cwd=ROOT, timeout=600).stdout)
    by_lang = {row["lang"]: row for row in rows}
    assert by_lang["python"]["isolation"].startswith("bubblewrap+cgroup-v")
    assert by_lang["c"]["isolation"] == "wasm" and by_lang["c"]["compile_isolation"].startswith("bubblewrap")


@pytest.fixture
def marker():
    return "minifaas-hostile-%s" % uuid.uuid4().hex


def drive(*steps, warm=True, marker="minifaas-hostile-none", helper=None, timeout=240, terminal=False):
    """Run the steps (dicts with a "job", maybe an "attack") in one worker-like process.
    `terminal`: that process has a pseudo-terminal for controlling terminal, as a server run
    from an operator's shell has, and the answer says its tty number (0: none)."""
    specs = []
    for i, step in enumerate(steps):
        job = dict(step["job"])
        job.setdefault("fn_id", os.path.basename(job["fn_dir"]))
        job.update(job_id=i, input=base64.b64encode(job.pop("input", b"")).decode())
        specs.append(dict(step, job=job))
    argv = [sys.executable, "-c", DRIVER, "warm" if warm else "cold", marker] + ([helper] if helper else [])
    master = slave = None
    if terminal:
        master, slave = os.openpty()
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            preexec_fn=(lambda: fcntl.ioctl(slave, termios.TIOCSCTTY, 0)) if terminal else None)
    try:
        tty_nr = _tty_nr(proc.pid)
        out, err = proc.communicate(json.dumps(specs).encode(), timeout=timeout)
    finally:
        _stop(proc)
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
    if proc.returncode != 0:
        pytest.fail("driver failed (%s):\n%s" % (proc.returncode, err.decode(errors="replace")))
    answer = json.loads(out)
    for r in answer["results"]:
        r["stdout"], r["stderr"] = base64.b64decode(r["stdout"]), base64.b64decode(r["stderr"])
    answer["tty_nr"] = tty_nr
    return answer


def _tty_nr(pid):
    """The controlling terminal of a process, as /proc/PID/stat's tty_nr: 0 for none."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rfind(")") + 2:].split()[4])


def _stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def job(fn_dir, lang, **kw):
    return dict(job=dict(fn_dir=fn_dir, lang=lang, **kw))


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that someone listens on (as the gateway would)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _accepted(sock):
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


PROBES = {"python": "hostile_probe.py", "js": "hostile_probe.js", "php": "hostile_probe.php"}


def test_the_uid_is_the_functions_own_and_stable():
    assert isolation.uid_for("greet_1") == isolation.uid_for("greet_1")
    assert isolation.uid_for("greet_1") != isolation.uid_for("greet_2")
    assert isolation.uid_for("greet_1") >= isolation.UID_BASE
    assert isolation.describe()["isolation"].startswith("bubblewrap+cgroup-v")


@pytest.mark.parametrize("lang", sorted(PROBES))
def test_a_hostile_function_reaches_no_other_functions_process_file_or_port(tmp_path, lang, listener):
    """The victim is a warm Python function (its fork server waiting) and, for node and PHP, a
    function of the attacker's language with its interpreter started one call ahead (node) or its
    fork server waiting (PHP). The attacker
    gets their pids, the victim's code file and the port, and may touch none of them."""
    need_toolchain(lang)
    victim = make_function(tmp_path, "victim", "python", EXAMPLES / "greet.py")
    attacker = make_function(tmp_path, "attacker", lang, FUNCTIONS / PROBES[lang])
    steps = [job(victim, "python", input=b"Ada")]
    spare_victim = None
    if lang != "python":
        spare_victim = make_function(tmp_path, "spare", lang, EXAMPLES / ("add.js" if lang == "js" else "hello.php"))
        steps.append(job(spare_victim, lang, input=b"[1, 2]" if lang == "js" else b"in"))
    port = listener.getsockname()[1]
    attack = dict(job(attacker, lang), attack=dict(victim="victim", pids=[os.getpid(), os.getppid()], ports=[port]))
    steps.append(attack)
    if spare_victim:
        steps.append(dict(job(attacker, lang), attack=dict(victim="spare", lang=lang)))
        steps.append(job(spare_victim, lang, input=b"[1, 2]" if lang == "js" else b"in"))
    steps.append(job(victim, "python", input=b"Bob"))
    results = drive(*steps)["results"]
    first, last = results[0], results[-1]
    task = json.loads(results[len(steps) - 2 - (2 if spare_victim else 0)]["input"])
    assert task["pids"] and task["ports"] == [port], task    # there was something to attack
    for r in results:
        if r["input"].startswith("{"):
            got = json.loads(r["stdout"])
            assert all(got[k] == [] for k in got if k != "visible"), (r["input"], got)
            # Its own sandbox only: bwrap's init and, warm, its own fork server; nothing of the
            # platform, and not the victim's fork server.
            visible = got.get("visible", [])
            assert not any("pytest" in c or "reference" in c for c in visible), visible
            assert len(visible) <= 2 and sum(c.startswith("/usr/bin/python3") for c in visible) <= 1, visible
    assert not _accepted(listener)
    # The victim's fork server was not touched: the same one answers, correctly.
    assert first["stdout"] == b"Hello, Ada!\n" and last["stdout"] == b"Hello, Bob!\n", last
    assert last["cold"] is False and last["extra"]["runtime_pid"] == first["extra"]["runtime_pid"]
    if spare_victim:
        paths = json.loads(results[-3]["input"])["paths"]
        assert paths, "the victim's warm interpreter had a code file to attack"
        expected = b'{"sum":3}\n' if lang == "js" else b"Hello from PHP!\nin\n"
        assert results[-2]["stdout"] == expected and b"HIJACKED" not in results[-2]["stdout"], results[-2]


def test_a_hostile_function_cannot_read_or_append_to_a_concurrent_calls_output(tmp_path):
    victim = make_function(tmp_path, "victim", "python", FUNCTIONS / "secret_out.py")
    attacker = make_function(tmp_path, "attacker", "python", FUNCTIONS / "hostile_probe.py")
    spec = [dict(job=dict(fn_dir=victim, lang="python", fn_id="victim", job_id=0, timeout_ms=20000,
                          input=base64.b64encode(b"4").decode()))]
    other = subprocess.Popen([sys.executable, "-c", DRIVER, "warm", "minifaas-hostile-none"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        other.stdin.write(json.dumps(spec).encode())
        other.stdin.close()
        uid = isolation.uid_for("victim")
        pids = []
        for _ in range(200):
            pids = [p for p in _pids_of_uid(uid) if b"secret" not in _cmdline(p)]
            if len(pids) >= 2:      # the fork server and its call
                break
            subprocess.run(["sleep", "0.05"])
        assert pids, "the victim's call never started"
        got = drive(dict(job(attacker, "python", input=json.dumps({"pids": pids}).encode())))["results"][0]
        out = other.stdout.read()
        other.wait(timeout=60)
    finally:
        _stop(other)
    seen = json.loads(got["stdout"])
    assert seen["read"] == [] and seen["signal"] == [] and seen["ptrace"] == [], seen
    victim_out = json.loads(out)["results"][0]
    assert victim_out["error"] is None, victim_out
    assert base64.b64decode(victim_out["stdout"]) == b"secret-of-the-victim\nend\n"


def _pids_of_uid(uid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/status" % entry) as f:
                    if any(line.split()[1] == str(uid) for line in f if line.startswith("Uid:")):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.mark.parametrize("lang", ["python", "php"])
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_no_daemon_or_zombie_outlives_its_call(tmp_path, marker, warm, lang):
    daemons = make_function(tmp_path, "daemons", lang, FUNCTIONS / ("daemons.py" if lang == "python" else "php_daemons.php"))
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    answer = drive(job(daemons, lang, input=marker.encode()), job(daemons, lang, input=marker.encode()),
                   job(greet, "python"), warm=warm, marker=marker)
    first, second, after = answer["results"]
    assert first["stdout"] == second["stdout"] == b"left daemons\n", first
    # Checked while the worker (and its fork server) still ran: nothing of the call was left.
    assert first["marked"] == [] and second["marked"] == [] and answer["marked"] == []
    assert first["strays"] == [] and second["strays"] == []
    assert after["stdout"] == b"Hello, world!\n"
    if warm:
        assert second["cold"] is False      # the fork server survived its call's daemons


@pytest.mark.parametrize("lang", ["python", "php"])
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_call_cannot_reach_the_operators_terminal(tmp_path, warm, lang):
    """A server started from a shell has that shell's terminal: a call that reached it could type
    commands into it (TIOCSTI). A call's session has no terminal, warm or cold. A warm call leads
    a process group of its own (what the fork server kills after it); a cold one is its sandbox's
    pid 2, in the group of the sandbox's init (pid 1), or, unsandboxed, leads its own."""
    probe = make_function(tmp_path, "terminal", lang, FUNCTIONS / ("terminal.py" if lang == "python" else "php_terminal.php"))
    answer = drive(job(probe, lang), job(probe, lang), warm=warm, terminal=True)
    assert answer["tty_nr"] != 0            # the worker-like driver had the terminal
    for result in answer["results"]:
        assert result["stdout"], result
        got = json.loads(result["stdout"])
        assert got["tty"] is None, got
        assert got["pgid"] == got["pid"] if warm else got["pgid"] in (got["pid"], 1), got
    if warm:
        assert answer["results"][1]["cold"] is False


@pytest.mark.parametrize("lang", ["python", "js", "php"])
def test_nothing_burns_cpu_after_a_timeout(tmp_path, marker, lang):
    """A loop that timed out, and the busy daemon of a call that ended: both gone at once."""
    need_toolchain(lang)
    loop = make_function(tmp_path, "loop", lang, FUNCTIONS / ("loop." + LANGUAGES[lang].ext))
    daemons = make_function(tmp_path, "daemons", "python", FUNCTIONS / "daemons.py")
    results = drive(job(daemons, "python", input=marker.encode()), job(loop, lang, timeout_ms=300),
                    marker=marker)["results"]
    assert results[1]["error"] == "timeout", results[1]
    assert results[0]["marked"] == [] and results[1]["marked"] == []
    assert results[1]["strays"] == []


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_call_inherits_no_descriptor_but_its_stdio(tmp_path, warm):
    """The sandbox is started with descriptors of ours (bwrap's --info-fd and --block-fd, the
    seccomp program, the code; a fork server's socket): none of them reaches the function."""
    fds = make_function(tmp_path, "fds", "python", FUNCTIONS / "fds.py")
    for r in drive(job(fds, "python"), job(fds, "python"), warm=warm)["results"]:
        assert r["error"] is None, r
        seen = dict(entry.split(":", 1) for entry in r["stdout"].decode().splitlines())
        assert sorted(seen) == ["0", "1", "2"], seen


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_tmp_and_dev_shm_vanish_with_the_call(tmp_path, warm):
    shm = make_function(tmp_path, "shm", "python", FUNCTIONS / "shm.py")
    results = drive(*[job(shm, "python") for _ in range(3)], warm=warm)["results"]
    assert all(r["error"] is None for r in results), results
    assert [r["stdout"] for r in results] == [b"shm [] tmp []\n"] * 3
    if warm:
        assert [r["cold"] for r in results] == [True, False, False]
    assert not os.path.exists("/dev/shm/keep") and not os.path.exists("/tmp/keep")


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_the_rlimits_hold_against_a_function_that_tries_to_pass_them(tmp_path, warm):
    """The rlimits behind the cgroup, set before the function's code runs, in a warm call (the
    fork server's, and the call's own CPU limit) as in a cold one: 256 descriptors, files of
    64 MiB, no core dump, the CPU seconds of the timeout plus one, the address space of
    memory_mb, and 512 processes of the function's uid."""
    fn = make_function(tmp_path, "limits", "python", FUNCTIONS / "rlimits.py")
    results = drive(*[job(fn, "python", timeout_ms=3000, memory_mb=120) for _ in range(2)], warm=warm)["results"]
    for r in results:
        assert (r["error"], r["exit_code"]) == (None, 0), r
        lines = r["stdout"].decode().splitlines()
        limits = {line.split()[0]: tuple(int(v) for v in line.split()[1:]) for line in lines[:6]}
        assert limits == {"RLIMIT_AS": (120 << 20,) * 2, "RLIMIT_FSIZE": (64 << 20,) * 2, "RLIMIT_CORE": (0, 0),
                          "RLIMIT_NOFILE": (256, 256), "RLIMIT_CPU": (4, 4), "RLIMIT_NPROC": (512, 512)}, lines
        assert lines[6].startswith("descriptors refused at ") and lines[6].endswith(" EMFILE"), lines
        assert int(lines[6].split()[3]) < 256
        assert lines[7] == "file stopped at 64 MiB EFBIG", lines
    if warm:
        assert [r["cold"] for r in results] == [True, False]


PROC_LIMITS = {"Max cpu time": "cpu", "Max file size": "fsize", "Max core file size": "core",
               "Max processes": "nproc", "Max open files": "nofile", "Max address space": "as"}


@pytest.mark.parametrize("lang,file,address_space", [("js", "limits.js", 2048), ("php", "limits.php", 128)],
                         ids=["js", "php"])
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_node_and_php_calls_run_under_the_same_rlimits(tmp_path, warm, lang, file, address_space):
    """What the kernel says of a node or PHP call's rlimits (/proc/self/limits): those of a
    Python call, with the address space each interpreter needs above memory_mb."""
    fn = make_function(tmp_path, "limits", lang, FUNCTIONS / file)
    results = drive(*[job(fn, lang, timeout_ms=3000, memory_mb=120) for _ in range(2)], warm=warm)["results"]
    for r in results:
        assert (r["error"], r["exit_code"]) == (None, 0), r
        limits = {}
        for line in r["stdout"].decode().splitlines():
            for label, key in PROC_LIMITS.items():
                if line.startswith(label + " "):
                    soft, hard = line[len(label):].split()[:2]
                    limits[key] = (soft, hard)
        assert limits == {"cpu": ("4", "4"), "fsize": (str(64 << 20),) * 2, "core": ("0", "0"),
                          "nproc": ("512", "512"), "nofile": ("256", "256"),
                          "as": (str((120 + address_space) << 20),) * 2}, r["stdout"]


def test_memory_mb_holds_for_all_of_a_calls_processes_together(tmp_path):
    kids = make_function(tmp_path, "kids", "python", FUNCTIONS / "memkids.py")
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    for warm in (True, False):
        out, after = drive(job(kids, "python", memory_mb=128), job(greet, "python"), warm=warm)["results"]
        # Each child alone is under the limit (rlimits would let all four through). Together
        # they are not: at most two of them can be alive with their 60 MB at the same time. (An
        # OOM kill of a child that has reported lets the next one through: the number that got
        # there says nothing, the number alive together does.) The parent may be killed first.
        words = out["stdout"].split()
        if words:
            assert words[0] == b"held" and words[2] == b"alive" and int(words[3]) <= 2, out
        assert out["error"] == "memory" and "128 MiB" in out["message"], out
        assert after["stdout"] == b"Hello, world!\n"


@pytest.mark.parametrize("lang,file,reuse,warm", [
    ("python", "memhold.py", False, True), ("python", "memhold.py", True, True),
    ("js", "memhold.js", False, True), ("python", "memhold.py", False, False)],
    ids=["python-fresh", "python-reuse", "node-fresh", "python-cold"])
def test_a_call_over_its_memory_ends_when_the_limit_is_broken_not_at_its_deadline(tmp_path, lang, file, reuse, warm):
    """Children over memory_mb together, every process of the call waiting for a minute: the
    OOM killer ends one, and the call must end then, whatever the others do. Before the watch
    on the cgroup, such a call held its worker until its deadline and only then said "memory"."""
    if isolation.cgroups() is None or isolation.cgroups().version != 1:
        pytest.skip("the OOM watch is cgroup v1's (memory.oom_control); this machine has %s"
                    % ("no cgroups" if isolation.cgroups() is None else "cgroup v2"))
    need_toolchain(lang)
    hold = make_function(tmp_path, "hold", lang, FUNCTIONS / file)
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    timeout_ms = 30000
    out, after = drive(job(hold, lang, memory_mb=128, timeout_ms=timeout_ms, reuse=reuse),
                       job(greet, "python"), warm=warm)["results"]
    assert out["error"] == "memory" and "128 MiB" in out["message"], out
    # Ended by the watch, not by the deadline: a tenth of it is more than a start and a kill take.
    assert out["exec_ms"] < timeout_ms / 10, out
    assert after["stdout"] == b"Hello, world!\n"


@pytest.mark.parametrize("lang", ["python", "php"])
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_fork_storm_stops_at_the_pids_limit_and_dies_with_its_call(tmp_path, marker, warm, lang):
    bomb = make_function(tmp_path, "bomb", lang, FUNCTIONS / ("forkbomb.py" if lang == "python" else "php_forkbomb.php"))
    greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
    answer = drive(job(bomb, lang, input=marker.encode(), timeout_ms=3000), job(greet, "python"),
                   warm=warm, marker=marker)
    storm, after = answer["results"]
    made = int(storm["stdout"].split()[0])
    assert 0 < made < CALL_PIDS_MAX, storm
    assert storm["error"] == "timeout" and storm["marked"] == [], storm
    assert after["stdout"] == b"Hello, world!\n" and answer["marked"] == []


HIJACKED_HELPER = """
import json, time
VICTIM = %d
_serve = serve
def serve(sock, source, code, *options):
    sock.send(json.dumps({"ready": True}).encode())
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 65536, 16)
        # A hijacked fork server: names another process as the call's, and never answers.
        sock.send(json.dumps({"pid": VICTIM}).encode())
        time.sleep(3600)
"""


def test_a_hijacked_fork_server_cannot_redirect_the_kill(tmp_path):
    """The worker used to killpg the pid the fork server reported: one under the attacker's
    control could have the platform kill any process group. Now the call is ended through its
    cgroup; the process named survives."""
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    # Where the sandbox user can read the helper (pytest's tmp_path is under a 0700 directory:
    # there the fork server would not start at all, and the test would pass for that reason).
    readable = pathlib.Path(tempfile.mkdtemp(prefix="minifaas-hijack-"))
    try:
        readable.chmod(0o755)
        source = (ROOT / "reference" / "worker" / "warm" / "warm_python.py").read_text()
        main_at = source.rindex('if __name__ == "__main__":')
        helper = readable / "evil_warm_python.py"
        helper.write_text(source[:main_at] + HIJACKED_HELPER % victim.pid + source[main_at:])
        helper.chmod(0o644)
        greet = make_function(tmp_path, "greet", "python", EXAMPLES / "greet.py")
        out = drive(job(greet, "python", timeout_ms=500), helper=str(helper))["results"][0]
        # A fork server says nothing but a call's status, once it ended: a pid is a lie.
        assert out["error"] == "runtime" and "instead of a call's status" in out["message"], out
        assert victim.poll() is None, "the platform killed the process the fork server named"
    finally:
        victim.kill()
        victim.wait()
        shutil.rmtree(readable)


def test_compilers_cannot_put_secrets_into_their_errors(monkeypatch):
    """#include "/etc/shadow", and the environment of the deploying process, fail to compile
    with a message that holds nothing of them."""
    need_toolchain("c")
    monkeypatch.setenv("FAAS_SECRET_FOR_TEST", "gateway-secret-do-not-leak")
    with open("/etc/shadow") as f:
        shadow_lines = [line.strip() for line in f if line.strip()]
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("c", (FUNCTIONS / "shadow_include.c").read_bytes())
    details = info.value.extra["details"]
    assert info.value.status == 422 and details
    assert not any(line in details for line in shadow_lines), details
    assert "root:" not in details
    source = b'#include "/proc/%d/environ"\nint main(void) { return 0; }\n' % os.getpid()
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("c", source)
    assert "gateway-secret" not in info.value.extra["details"]


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/%d/environ", "/etc/shadow"])
def test_rust_include_str_of_secrets_is_a_422_without_them(monkeypatch, path):
    need_toolchain("rust")
    monkeypatch.setenv("FAAS_SECRET_FOR_TEST", "gateway-secret-do-not-leak")
    if "%d" in path:
        path = path % os.getpid()
    # include! parses the file as Rust, so a compiler that can read it quotes it in the error.
    source = ('fn main() { let s: u8 = include_str!("%s"); include!("%s"); }\n' % (path, path)).encode()
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("rust", source)
    details = info.value.extra["details"]
    assert info.value.status == 422 and details
    assert "gateway-secret" not in details and "root:" not in details, details


SYSCALLS = r"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
got = {}
for name, nr, args in (("ptrace", 101, (16, 1, 0, 0)), ("unshare", 272, (0x10000000,)), ("bpf", 321, (0, 0, 0)),
                       ("keyctl", 250, (0, 0)), ("io_uring_setup", 425, (1, 0))):
    got[name] = (libc.syscall(nr, *args), ctypes.get_errno())
print(json.dumps(got))
"""


def test_the_system_call_filter_refuses_what_no_function_needs(tmp_path):
    if not isolation.describe()["seccomp"]:
        pytest.skip("no seccomp filter for this machine (%s)" % os.uname().machine)
    probe = tmp_path / "syscalls.py"
    probe.write_text(SYSCALLS)
    fn = make_function(tmp_path, "syscalls", "python", probe)
    for warm in (True, False):
        out = drive(job(fn, "python"), warm=warm)["results"][0]
        got = json.loads(out["stdout"])
        assert {name: r for name, (r, _) in got.items()} == dict.fromkeys(got, -1), got
        assert got["ptrace"][1] == 1 and got["io_uring_setup"][1] == 38, got    # EPERM, ENOSYS


def _stack_pids(stack):
    """The pids of a stack's own processes (gateway, balancer, server, workers): its group."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == stack.proc.pid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_through_the_platform_a_function_reaches_neither_the_gateway_nor_another_function(start_stack):
    """End to end, as deployed: the attacker gets the stack's own pids and the gateway's port,
    and may not signal, read (the --api-key on a command line, the environment) or connect."""
    from support import deploy, http, invoke

    stack = start_stack(workers=2)
    victim = deploy(stack.url, "victim", "python", EXAMPLES / "greet.py")["id"]
    assert invoke(stack.url, victim, "Ada")[1]["output"] == "Hello, Ada!\n"
    attacker = deploy(stack.url, "attacker", "python", FUNCTIONS / "hostile_probe.py")["id"]
    pids = _stack_pids(stack)
    assert len(pids) >= 3, pids
    task = {"pids": pids, "ports": [stack.port]}
    for _ in range(2):              # both workers, with round robin
        status, body, _ = invoke(stack.url, attacker, raw=json.dumps(task).encode())
        assert status == 200, body
        got = json.loads(body["output"])
        assert all(got[k] == [] for k in got if k != "visible"), got
        assert not any("reference" in c for c in got["visible"]), got["visible"]
    assert _stack_pids(stack) == pids   # every process of the platform still there
    for name in ("Bob", "Cy"):
        status, body, _ = invoke(stack.url, victim, name)
        assert status == 200 and body["output"] == "Hello, %s!\n" % name, body
    assert http("GET", stack.url + "/health")[0] == 200


def test_a_toolchain_that_lives_under_tmp_is_seen_inside_the_sandbox(tmp_path):
    """A checkout under /tmp (CI clones there) keeps go and node in its .tox: the sandbox's own
    /tmp must not hide the tree bound for the toolchain."""
    _need_isolation()
    from reference.worker.sandbox import bwrap

    tree = tmp_path / "toolchain"
    (tree / "bin").mkdir(parents=True)
    tool = tree / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho from-the-tree\n")
    tool.chmod(0o755)
    assert str(tool).startswith("/tmp/")
    argv = bwrap.argv([str(tool)], uid=isolation.uid_for("toolchain-probe"), trees=[str(tree)], privileged=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-the-tree\n"
    # And the rest of /tmp stays private: the test's other files are not there.
    (tmp_path / "secret").write_text("x")
    peek = bwrap.argv(["/bin/ls", str(tmp_path)], uid=isolation.uid_for("toolchain-probe"), trees=[str(tree)],
                      privileged=True)
    listed = subprocess.run(peek, capture_output=True, text=True, timeout=30)
    assert "secret" not in listed.stdout and "toolchain" in listed.stdout
