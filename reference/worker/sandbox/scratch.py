"""Where calls of interpreted functions get their private directories: one root per machine
user, a directory per call named for its worker, swept when that worker is gone."""

import logging
import os
import shutil
import stat
import tempfile

log = logging.getLogger(__name__)


def call_prefix():
    """Call directories are named for the worker that made them, so one killed mid-call (or with
    interpreters started ahead, reference/worker/warm/runtimes.py) has its leftovers swept by the next worker."""
    return "call-%d-" % os.getpid()


def sweep(scratch):
    for entry in os.listdir(scratch):
        parts = entry.split("-")
        if len(parts) >= 3 and parts[0] == "call" and parts[1].isdigit() and not os.path.exists("/proc/" + parts[1]):
            shutil.rmtree(os.path.join(scratch, entry), ignore_errors=True)


def root():
    """The directory that holds every call's private directory. One shared, fixed place, so a
    worker killed mid-call leaves at most one call directory behind, not a directory per worker.
    0711: the sandbox user may enter its own call directory (random name) but list none."""
    path = os.path.join(tempfile.gettempdir(), "minifaas-calls-%d" % os.geteuid())
    try:
        os.mkdir(path, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(path)
    # Someone else's directory (or a symlink) in a shared /tmp is not to be trusted.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        log.warning("%s is not ours; using a private scratch directory", path)
        path = tempfile.mkdtemp(prefix="minifaas-calls-")
    os.chmod(path, 0o711)
    return path
