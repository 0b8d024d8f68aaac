"""A worker finds its leftover children (reference/worker/sandbox/process.py) from its threads'
/proc/self/task/TID/children files; the scan of every /proc/PID/stat is the fallback. Both must
name the same processes, zombies included, and the warm ones it keeps must not count."""

import os
import subprocess
import threading
import time

from reference.worker.sandbox import process


def _wait_zombie(pid, deadline_s=10.0):
    deadline = time.monotonic() + deadline_s
    while process._state(pid) != "Z":
        assert time.monotonic() < deadline, "pid %d never became a zombie" % pid
        time.sleep(0.01)


def test_the_children_files_name_what_the_scan_of_proc_finds():
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    # One forked by another thread: the files are per thread.
    other = []
    thread = threading.Thread(target=lambda: other.append(subprocess.Popen(["sleep", "30"])))
    thread.start()
    thread.join()
    zombie = subprocess.Popen(["true"])
    _wait_zombie(zombie.pid)
    everyone = sleepers + other + [zombie]
    try:
        pids = {p.pid for p in everyone}
        assert pids <= set(process._children())
        assert sorted(process._children()) == sorted(process._children_by_scan())
        process.own_children.add(sleepers[0].pid)
        strays = process._stray_children()
        assert sleepers[0].pid not in strays and {sleepers[1].pid, other[0].pid, zombie.pid} <= set(strays)
        assert zombie.pid in process._stray_children(zombies_only=True)
        assert sleepers[1].pid not in process._stray_children(zombies_only=True)
    finally:
        process.own_children.discard(sleepers[0].pid)
        for p in everyone:
            p.kill()
            p.wait()
    assert not pids & set(process._children())
    assert os.getpid() not in process._children()
