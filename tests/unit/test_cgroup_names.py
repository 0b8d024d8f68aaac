"""A worker's cgroup directory names one process, not a pid that a later worker may reuse: a
sweep must never take a live worker's groups for those of a dead one."""

import os
import subprocess
import sys

import pytest

from reference.worker.sandbox import cgroup


def test_a_live_worker_is_not_gone_and_a_reused_pid_is():
    mine = cgroup.worker_dir()
    assert mine.startswith("minifaas-%d-" % os.getpid())
    assert not cgroup._gone(mine)
    # The same pid with another start time: the directory of an earlier process that had it.
    pid, start = mine.split("-")[1:]
    assert cgroup._gone("minifaas-%s-%d" % (pid, int(start) + 1))


def test_a_dead_worker_is_gone_and_other_names_are_left_alone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    name = cgroup.worker_dir(child.pid)
    child.wait()
    assert cgroup._gone(name)
    assert cgroup._gone("minifaas-%d" % child.pid)          # the older, pid-only name
    for other in ("minifaas-hostile-abc", "build-1-2", "minifaas-x-1", "user.slice"):
        assert not cgroup._gone(other)


def test_workers_sweeping_the_same_dead_worker_at_once_all_succeed():
    """New workers sweep the groups a killed worker left when their first call comes: under a
    burst several do it at the same moment, and one removed a group between another's open and
    read of its cgroup.procs, whose read then failed with ENODEV and failed that user's call
    (seen once in CI: "function could not run: [Errno 19] No such device"). Real cgroups, four
    sweepers forked and released together, many rounds."""
    hierarchy = cgroup.detect()
    if hierarchy is None:
        pytest.skip("needs writable cgroups (root): %s" % cgroup.missing())
    bases = {c: os.path.join(base, "minifaas-test-sweep-%d" % os.getpid()) for c, base in hierarchy.bases.items()}
    scratch = cgroup.Hierarchy(hierarchy.version, bases, hierarchy.mounts)
    dead = ["minifaas-%d-1" % pid for pid in (4194305, 4194306)]     # above any pid_max: never alive
    groups = ["python-call", "srv-1", "srv-2", "cold-python"]
    failures = []
    try:
        for base in bases.values():
            os.makedirs(base)
            if hierarchy.version == 2:
                with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory +pids")
        for _ in range(40):
            for base in bases.values():
                for worker in dead:
                    for group in groups:
                        os.makedirs(os.path.join(base, worker, group), exist_ok=True)
            go_r, go_w = os.pipe()
            out_r, out_w = os.pipe()
            sweepers = []
            for _ in range(4):
                pid = os.fork()
                if pid == 0:
                    try:
                        os.close(go_w)
                        os.read(go_r, 1)
                        scratch.sweep()
                        os.write(out_w, b"ok\n")
                    except BaseException as exc:
                        os.write(out_w, (repr(exc) + "\n").encode())
                    finally:
                        os._exit(0)
                sweepers.append(pid)
            os.close(go_r)
            os.close(out_w)
            os.write(go_w, b"g" * 4)
            os.close(go_w)
            for pid in sweepers:
                os.waitpid(pid, 0)
            with os.fdopen(out_r, "rb") as f:
                answers = f.read().decode().splitlines()
            failures += [a for a in answers if a != "ok"]
            assert len(answers) == 4, answers
            assert not any(_subgroups(base) for base in bases.values())    # every dead group is gone
        assert failures == []
    finally:
        for base in bases.values():
            for worker in _subgroups(base):
                for group in _subgroups(os.path.join(base, worker)):
                    os.rmdir(os.path.join(base, worker, group))
                os.rmdir(os.path.join(base, worker))
            if os.path.isdir(base):
                os.rmdir(base)


def _subgroups(path):
    """The child cgroups of `path` (its directories; the rest are its control files)."""
    if not os.path.isdir(path):
        return []
    return [name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))]
