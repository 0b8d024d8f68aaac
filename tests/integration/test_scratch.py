"""Per-stack scratch roots (reference/worker/sandbox/scratch.py): two stacks on one machine, a
call on each, and neither sees nor sweeps the other's call directories; a stack's root is gone
once it stops, and a killed stack's root is removed by the next stack to start."""

import os
import pathlib
import signal
import stat
import subprocess
import time

from support import EXAMPLES, deploy, http, invoke

from reference.worker.sandbox import scratch

WAIT_S = 60  # a generous deadline for a condition, not a timing assertion


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT_S
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "still not true after %d s: %s" % (WAIT_S, what)
        time.sleep(0.1)


def worker_pids(stack):
    status, stats, _ = http("GET", stack.url + "/stats")
    assert status == 200, stats
    return [w["pid"] for w in stats["workers"] if w["state"] in ("idle", "busy") and w["pid"]]


def parent(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rpartition(")")[2].split()[1])


def stack_root(stack):
    """The scratch root of the stack: named for its server, the parent of its workers."""
    pids = wait_until(lambda: worker_pids(stack), "the stack has a booted worker")
    servers = {parent(pid) for pid in pids}
    assert len(servers) == 1, servers
    root = pathlib.Path(scratch.machine_root()) / scratch.stack_name(servers.pop())
    st = os.lstat(root)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o711 and st.st_uid == os.geteuid()
    return root


def dead_pid():
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


def test_two_stacks_have_their_own_roots_and_neither_sweeps_the_other(start_stack):
    a = start_stack(workers=1, env={"FAAS_WARM": "1"})
    b = start_stack(workers=1, env={"FAAS_WARM": "1"})
    root_a, root_b = stack_root(a), stack_root(b)
    assert root_a != root_b
    for stack in (a, b):
        deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
        status, answer, _ = invoke(stack.url, "greet", "x")
        assert status == 200 and answer["output"] == "Hello, x!\n", answer
    # A warm Python call copied its fork server's helper into its own stack's root.
    for root in (root_a, root_b):
        assert [p.name for p in root.iterdir() if p.name.startswith("warm_python-")], list(root.iterdir())

    # What a worker killed mid-call leaves, in each root; a new worker of B sweeps B's only.
    left = {root: root / ("call-%d-left" % dead_pid()) for root in (root_a, root_b)}
    for path in left.values():
        path.mkdir()
        (path / "code.py").write_text("left over")
    [old] = worker_pids(b)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: worker_pids(b) and old not in worker_pids(b), "B has a new worker")
    wait_until(lambda: not left[root_b].exists(), "B's new worker swept B's leftover")
    assert left[root_a].exists() and (left[root_a] / "code.py").read_text() == "left over"
    assert stack_root(b) == root_b

    # A stops: its root goes, B's stays and B still runs calls.
    a.close()
    assert not root_a.exists()
    assert root_b.exists()
    status, answer, _ = invoke(b.url, "greet", "y")
    assert status == 200 and answer["output"] == "Hello, y!\n", answer
    b.close()
    assert not root_b.exists()


def test_a_killed_stack_leaves_its_root_and_the_next_stack_removes_it(start_stack):
    killed = start_stack(workers=1)
    root = stack_root(killed)
    server = parent(worker_pids(killed)[0])
    os.killpg(killed.proc.pid, signal.SIGKILL)   # no chance to clean up
    wait_until(lambda: scratch._start_time(server) is None, "the killed server is gone")
    assert root.exists()
    # A live stack's root is never taken for a dead one's.
    alive = start_stack(workers=1)
    alive_root = stack_root(alive)
    assert not root.exists()
    assert alive_root.exists()
