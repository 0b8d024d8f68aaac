"""Which isolation this machine gives functions and compilers, and the uid each one runs as.

The strong path needs root, bubblewrap (with unprivileged user namespaces) and setpriv, and
cgroups: "bubblewrap+cgroup-v1" (or -v2). Without them the platform still runs with what it
has, down to "rlimits-only" (the old behaviour: a shared `nobody`, rlimits, process groups),
and says so loudly; `require()` is what `--require-isolation` calls to refuse that instead.
"""

import ctypes
import functools
import hashlib
import logging
import os
import subprocess

from reference.worker.sandbox import bwrap, cgroup, seccomp

log = logging.getLogger(__name__)

UID_BASE = 100000           # function uids: UID_BASE + a stable number of the function id
UID_SPAN = 1 << 20          # to 1148575: above every distribution's ordinary users
BUILD_UID = UID_BASE - 1    # compilers; a build sees only its own scratch directory
INSTALL = "apt-get install bubblewrap util-linux"


def uid_for(fn_id):
    """The uid a function's processes run as: its own, the same in every worker and across restarts."""
    digest = hashlib.sha256(fn_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


@functools.lru_cache(maxsize=None)
def _bwrap_problem():
    """None when a sandbox can be started here, else why not."""
    if os.environ.get("FAAS_NO_BWRAP") == "1":
        return "bubblewrap (disabled by FAAS_NO_BWRAP=1)"
    if os.geteuid() != 0:
        return "bubblewrap sandbox (the platform is not root: no uid per function)"
    if not bwrap.bwrap_path():
        return "bubblewrap (bwrap not found)"
    if not bwrap.setpriv_path():
        return "setpriv (util-linux)"
    try:
        with _not_subreaper():
            proc = subprocess.run(bwrap.argv(["/bin/true"], BUILD_UID), capture_output=True, timeout=30,
                                  env={"PATH": bwrap.SANDBOX_PATH})
    except (OSError, subprocess.SubprocessError) as exc:
        return "a working bubblewrap (%s)" % exc
    if proc.returncode != 0:
        return "a working bubblewrap (unprivileged user namespaces?): %s" % proc.stderr.decode(errors="replace").strip()
    return None


class _not_subreaper:
    """While probing, bwrap's own intermediate processes must go to init, not become zombies
    of a worker (a child subreaper) that would take them for a call's leftovers."""

    PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

    def __enter__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_int(0)
        self.libc.prctl(self.PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0)
        self.was = value.value
        if self.was:
            self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

    def __exit__(self, *exc):
        if self.was:
            self.libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def sandboxed():
    """True when functions and compilers run in bubblewrap as a uid of their own."""
    return _bwrap_problem() is None


def cgroups():
    """The cgroup Hierarchy calls are put in, or None."""
    return cgroup.detect()


def describe():
    """{"isolation": "bubblewrap+cgroup-v1" | "bubblewrap" | "cgroup-v1" | "rlimits-only",
    "missing": [what is lacking], "install": command or "", "seccomp": whether the sandbox's
    system-call filter is on}: for GET /health and `minifaas languages`."""
    parts, missing = [], []
    problem = _bwrap_problem()
    if problem is None:
        parts.append("bubblewrap")
    else:
        missing.append(problem)
    hierarchy = cgroups()
    if hierarchy is not None:
        parts.append(hierarchy.name)
    else:
        missing.append(cgroup.missing())
    install = ""
    if problem is not None and os.geteuid() == 0 and "FAAS_NO_BWRAP" not in problem:
        install = INSTALL
    return {"isolation": "+".join(parts) if parts else "rlimits-only", "missing": missing, "install": install,
            "seccomp": problem is None and seccomp.program() is not None}


def strong():
    return not describe()["missing"]


def summary():
    """One line: the isolation in force and, when weak, what is missing and how to get it."""
    info = describe()
    if not info["missing"]:
        return "isolation: %s" % info["isolation"]
    text = "isolation: %s -- WEAK: functions are not fully isolated; missing %s" % (
        info["isolation"], "; ".join(info["missing"]))
    if info["install"]:
        text += "; install with: %s" % info["install"]
    return text


_warned = []


def warn_if_weak():
    """Log, once per process, a loud warning when the isolation is not the strong one."""
    if not _warned:
        _warned.append(True)
        if not strong():
            log.warning("%s", summary())


def require():
    """For `--require-isolation`: return when the strong isolation is in force, else SystemExit
    with what is missing and how to install it."""
    if not strong():
        raise SystemExit("refusing to start without full isolation (--require-isolation): " + summary())
