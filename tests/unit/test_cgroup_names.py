"""A worker's cgroup directory names one process, not a pid that a later worker may reuse: a
sweep must never take a live worker's groups for those of a dead one."""

import os
import subprocess
import sys

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
