"""A cgroup per call (or per warm process): its memory and pids limits hold all its processes
together, and at its end the whole group is frozen and killed, by the members the kernel lists.

v2 where the unified hierarchy has the memory and pids controllers, else v1 (memory, pids,
freezer mounted separately). Groups are made under the cgroup the worker itself runs in
(`<own>/minifaas-<worker pid>-<its start time>/<name>`), so the platform stays inside whatever limits its own
supervisor set, and a killed worker's groups are swept by the next one.

Nothing here acts on a pid that sandboxed code reported: members are read from the group's
`cgroup.procs` and signalled through a pidfd opened after checking they are still members.
"""

import errno
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "freezer")
KILL_DEADLINE_S = 5.0
# A group another process removed meanwhile: ENOENT opening its files, ENODEV reading or
# writing one opened before the removal (two workers sweeping the same dead worker's groups).
_VANISHED = (errno.ENOENT, errno.ENODEV)


def _own_path(controller):
    """The path of the cgroup this process is in, for a v1 controller ('' for v2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller == "" and names == "":
                return path
            if controller and controller in names.split(","):
                return path
    return None


def _writable_dir(path):
    return os.path.isdir(path) and os.access(path, os.W_OK)



def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None
    when it is gone: with the pid it names one process, whatever pid reuse does."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]


def worker_dir(pid=None):
    """`minifaas-<pid>-<start time>`: a pid alone is reused in a long run (a test suite forks
    thousands of workers), and a sweep that took a new worker's groups for a dead one's would
    remove them under it (its next write: ENODEV)."""
    pid = pid or os.getpid()
    return "minifaas-%d-%s" % (pid, _start_time(pid))


def _gone(entry):
    """True when `entry` is the directory of a worker that no longer exists."""
    parts = entry.split("-")
    if parts[0] != "minifaas" or len(parts) not in (2, 3) or not parts[1].isdigit():
        return False
    if len(parts) == 2:     # left by an older version, named by the pid alone
        return not os.path.exists("/proc/" + parts[1])
    return _start_time(int(parts[1])) != parts[2]

class Hierarchy:
    """Where this worker makes its groups: one directory per controller (v1) or one (v2)."""

    def __init__(self, version, bases, mounts):
        self.version, self.bases = version, bases      # bases: {controller: directory}
        self.mounts = mounts                           # {controller: its mount point}

    @property
    def name(self):
        return "cgroup-v%d" % self.version

    def group(self, name):
        return Group(self, name)

    def sweep(self):
        """Remove the groups of workers that are gone (killed mid-call), killing what is left in them."""
        dead = set()
        for base in self.bases.values():
            try:
                entries = os.listdir(base)
            except OSError:
                continue
            for entry in entries:
                if _gone(entry):
                    dead.add(entry)
        for worker in dead:
            try:
                self.remove_worker(worker)
            except OSError as exc:  # best effort: a sweep must never fail the call that started it
                log.warning("cannot sweep the cgroups of %s: %s", worker, exc)

    def remove_worker(self, worker):
        """Kill and remove every group of one worker, then the worker's own directory."""
        names = set()
        for base in self.bases.values():
            top = os.path.join(base, worker)
            try:
                names.update(d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d)))
            except OSError:
                pass
        for name in names:
            group = Group(self, name, worker=worker)
            group.made = True
            group.destroy()
        self.release_worker(worker)

    def release_worker(self, worker=None):
        """Remove the worker's own directories if no group is left in them (the last runtime
        of a worker to close does it)."""
        for base in self.bases.values():
            try:
                os.rmdir(os.path.join(base, worker or worker_dir()))
            except OSError:
                pass    # still holds another runtime's group, or already gone


def _v2():
    mount = None
    for candidate in (ROOT, os.path.join(ROOT, "unified")):
        if os.path.exists(os.path.join(candidate, "cgroup.controllers")):
            mount = candidate
            break
    if mount is None:
        return None
    own = _own_path("")
    if own is None:
        return None
    base = os.path.join(mount, own.lstrip("/"))
    try:
        with open(os.path.join(base, "cgroup.controllers")) as f:
            available = f.read().split()
    except OSError:
        return None
    if not {"memory", "pids"} <= set(available) or not _writable_dir(base):
        return None
    return Hierarchy(2, {"": base}, {"": mount})


def _v1():
    bases, mounts = {}, {}
    for controller in V1_CONTROLLERS:
        own = _own_path(controller)
        base = os.path.join(ROOT, controller, (own or "/").lstrip("/"))
        if own is None or not _writable_dir(base):
            if controller == "freezer":
                continue        # killing still works without it, by repeated passes
            return None
        bases[controller] = base
        mounts[controller] = os.path.join(ROOT, controller)
    return Hierarchy(1, bases, mounts)


_detected = []


def detect():
    """The Hierarchy this worker can make groups in, or None (not root, or no controllers)."""
    if not _detected:
        hierarchy = None
        if os.geteuid() == 0 and os.environ.get("FAAS_NO_CGROUPS") != "1":
            for make in (_v2, _v1):
                try:
                    hierarchy = make()
                    if hierarchy is not None:
                        _probe(hierarchy)
                        break
                except OSError as exc:
                    # e.g. v2 controllers that cannot be enabled below a cgroup holding processes
                    log.warning("cannot use %s: %s", make.__name__.strip("_"), exc)
                    hierarchy = None
        _detected.append(hierarchy)
    return _detected[0]


def _probe(hierarchy):
    """Make, limit and remove a group: raises OSError when this hierarchy cannot be used."""
    group = hierarchy.group("probe")
    try:
        group.limit(64 << 20, 8)
        for fd in group.join_fds():
            os.close(fd)
    finally:
        group.destroy()
        hierarchy.release_worker()


def missing():
    """Why there are no cgroups here, in a few words (for the isolation report)."""
    if os.geteuid() != 0:
        return "cgroups (the platform is not root)"
    return "cgroups (no writable v2 memory+pids controllers, nor v1 memory and pids)"


class Group:
    """One cgroup of this worker: `<own>/minifaas-<worker pid>-<start time>/<name>` in every controller.
    Made lazily at `limit()`; `join_fds()` are what a process writes "0" into to enter it."""

    def __init__(self, hierarchy, name, worker=None):
        self.hierarchy = hierarchy
        top = worker or worker_dir()
        self.dirs = {c: os.path.join(base, top, name) for c, base in hierarchy.bases.items()}
        # How /proc/PID/cgroup names this group (our cgroup namespace is the host's).
        c = "" if hierarchy.version == 2 else "pids"
        self.proc_path = "/" + os.path.relpath(self.dirs[c], hierarchy.mounts[c])
        self.proc_controller = c
        self.made = False
        self.limits = None
        self.oom_seen = 0
        self.kept = None            # join_fds() kept open for a group entered at every call
        self.watch = None           # oom_watch()'s eventfd, registered once
        self.unwatchable = False    # its registration failed: not tried again
        self.struck_since = False   # the watch fired since ran_out_of_memory() last asked

    def _file(self, controller, name):
        if self.hierarchy.version == 2:
            return os.path.join(self.dirs[""], name)
        return os.path.join(self.dirs[controller], name)

    def _write(self, controller, name, value):
        with open(self._file(controller, name), "w") as f:
            f.write(str(value))

    def _make(self):
        for path in self.dirs.values():
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
                if self.hierarchy.version == 2:
                    # A v2 group passes controllers down only when its parent enables them.
                    for level in (os.path.dirname(parent), parent):
                        with open(os.path.join(level, "cgroup.subtree_control"), "w") as f:
                            f.write("+memory +pids")
            os.makedirs(path, exist_ok=True)
        self.made = True

    def limit(self, memory_bytes, pids):
        """Make the group if need be and set its limits (no swap beyond the memory limit)."""
        if not self.made:
            self._make()
        if self.limits == (memory_bytes, pids):
            return
        if self.hierarchy.version == 2:
            self._write("", "memory.max", memory_bytes)
            try:
                self._write("", "memory.swap.max", 0)
            except OSError:
                pass
            self._write("", "pids.max", pids)
        else:
            self._set_v1_memory(memory_bytes)
            self._write("pids", "pids.max", pids)
        self.limits = (memory_bytes, pids)
        self.oom_seen = self.oom_kills()

    def _set_v1_memory(self, memory_bytes):
        memsw = self._file("memory", "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        # memsw must stay >= the memory limit at every step: raise it first, lower it last.
        for attempt in range(2):
            try:
                if has_memsw and self.limits and memory_bytes > self.limits[0]:
                    self._write("memory", "memory.memsw.limit_in_bytes", memory_bytes)
                self._write("memory", "memory.limit_in_bytes", memory_bytes)
                if has_memsw:
                    self._write("memory", "memory.memsw.limit_in_bytes", memory_bytes)
                return
            except OSError as exc:
                # Charges left by ended calls (page cache) above a lower limit: drop them, retry.
                if exc.errno != errno.EBUSY or attempt:
                    raise
                self._write("memory", "memory.force_empty", 0)

    def join_fds(self):
        """Descriptors of the group's cgroup.procs, opened here (as root) and close-on-exec: a
        process of the call writes b"0" into each to enter the group before it runs any code.
        The kernel resolves a pid written there in the writer's pid namespace, so a sandboxed
        process can move nothing but its own sandbox's processes."""
        paths = [self._file(c, "cgroup.procs") for c in self.dirs] if self.hierarchy.version == 1 \
            else [self._file("", "cgroup.procs")]
        fds = []
        try:
            for path in paths:
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def kept_join_fds(self):
        """join_fds() opened at the first call and kept until destroy(), for a group that every
        call of a runtime enters (a fork server's calls): the caller must not close them."""
        if self.kept is None:
            self.kept = self.join_fds()
        return self.kept

    def members(self):
        """Pids (in our namespace) of every process in the group, as the kernel lists them."""
        pids = set()
        controllers = ("",) if self.hierarchy.version == 2 else tuple(self.dirs)
        for controller in controllers:
            try:
                with open(self._file(controller, "cgroup.procs")) as f:
                    pids.update(int(line) for line in f if line.strip())
            except OSError as exc:
                if exc.errno not in _VANISHED:
                    raise
        return pids

    def _any_member(self):
        """Whether the group has a process, from one controller: a call's process enters all of
        them before it runs any code, or exits."""
        controller = "" if self.hierarchy.version == 2 else "freezer" if "freezer" in self.dirs else "pids"
        try:
            return bool(_read(self._file(controller, "cgroup.procs"), 1))
        except OSError as exc:
            if exc.errno not in _VANISHED:
                raise
            return False

    def _is_member(self, pid):
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        for line in lines:
            _, names, path = line.split(":", 2)
            if (names == "" if self.proc_controller == "" else self.proc_controller in names.split(",")):
                return path == self.proc_path
        return False

    def _freeze(self, state):
        if self.hierarchy.version == 2:
            try:
                self._write("", "cgroup.freeze", 1 if state == "FROZEN" else 0)
            except OSError:
                return False
            return True
        if "freezer" not in self.dirs:
            return False
        try:
            self._write("freezer", "freezer.state", state)
        except OSError:
            return False
        return True

    def kill(self, spare=()):
        """Freeze the group, SIGKILL every member, thaw it, and wait until it is empty. Returns
        the number of processes killed. Only kernel-listed members are signalled, each through
        a pidfd opened once it is known to be a member still (so a reused pid is never hit).

        `spare`: pids of our own children (from our own Popen, never from the sandbox) to leave
        for the caller to reap: the outer bwrap, which then reaps its pid 1 itself instead of
        leaving it to be re-parented to the worker. Those do not count for "empty"."""
        if not self.made or not self._any_member():
            return 0            # the usual end of a call: nothing left, nothing to freeze
        if not spare and self.hierarchy.version == 2 and os.path.exists(self._file("", "cgroup.kill")):
            count = len(self.members())
            if count:
                self._write("", "cgroup.kill", 1)
            self._wait_empty()
            return count
        return self._kill_but(set(spare))

    def _kill_but(self, spare):
        """Freeze, SIGKILL every member but `spare` through a pidfd, thaw so they die, until
        only `spare` is left (or the deadline passes)."""
        frozen = self._freeze("FROZEN")
        killed, deadline = 0, time.monotonic() + KILL_DEADLINE_S
        try:
            while True:
                pids = self.members() - spare
                if not pids:
                    return killed
                for pid in pids:
                    killed += _kill_member(self, pid)
                if frozen:
                    self._freeze("THAWED")
                    frozen = False
                if time.monotonic() > deadline:
                    log.error("cgroup %s still has members after %.0f s", self.dirs, KILL_DEADLINE_S)
                    return killed
                time.sleep(0.001)
        finally:
            if frozen:
                self._freeze("THAWED")

    def _wait_empty(self):
        deadline = time.monotonic() + KILL_DEADLINE_S
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.001)

    def oom_kills(self):
        """How many processes the kernel's OOM killer has ended in this group so far."""
        name = "memory.events" if self.hierarchy.version == 2 else "memory.oom_control"
        try:
            for line in _read(self._file("memory", name), 4096).split(b"\n"):
                key, _, value = line.partition(b" ")
                if key == b"oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def ran_out_of_memory(self):
        """True when the OOM killer ended a process of this group since its limits were set
        or since the last time this was asked (its count, or the watch's word: the count
        follows the kill, which may not have happened yet when a call is ended at the watch)."""
        now = self.oom_kills()
        seen, self.oom_seen = self.oom_seen, now
        if self.watch is not None:
            self._read_watch()
        struck, self.struck_since = self.struck_since, False
        return now > seen or struck

    def oom_watch(self):
        """A descriptor that turns readable when the kernel finds this group out of memory, so
        that a call over its memory_mb ends then and not at its deadline, whatever its other
        processes go on doing. cgroup v1: an eventfd on memory.oom_control, registered once
        (strikes before this call are read off here). None under v2 (memory.events could be
        polled, but this machine has no v2 memory controller to test it on): there the call's
        end or its deadline says it, as before."""
        if self.hierarchy.version != 1 or not self.made or self.unwatchable:
            return None
        if self.watch is None:
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                ctl = os.open(self._file("memory", "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    self._write("memory", "cgroup.event_control", "%d %d" % (efd, ctl))
                finally:
                    os.close(ctl)
            except OSError as exc:
                os.close(efd)
                log.warning("no OOM watch on %s: %s", self.dirs["memory"], exc)
                self.unwatchable = True
                return None
            self.watch = efd
        self._read_watch()
        self.struck_since = False
        return self.watch

    def _read_watch(self):
        """Remember (for ran_out_of_memory) whether the watch fired since it was last read."""
        try:
            os.eventfd_read(self.watch)
        except BlockingIOError:
            return
        self.struck_since = True

    def destroy(self):
        """Kill the members and remove the group."""
        if self.made:
            self.kill()
        for fd in self.kept or ():
            os.close(fd)
        self.kept = None
        if self.watch is not None:
            os.close(self.watch)    # before the rmdir, which would fire it
        self.watch = None
        for path in self.dirs.values():
            _rmdir(path)
        self.made = False
        self.limits = None


def _read(path, size):
    """At most `size` bytes of a cgroup file in one read, without io's buffered layers (their
    fstat and isatty are most of a read this small, twice a call)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _rmdir(path):
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.005)    # a killed member is still on its way out


# Enters the groups whose cgroup.procs descriptors are listed, then becomes the command: no
# preexec_fn in a process that has threads (the gateway compiles with a thread pool running).
_TRAMPOLINE = "import os, sys\nfor fd in sys.argv[1].split(','): os.write(int(fd), b'0')\nos.execv(sys.argv[2], sys.argv[2:])"


def trampoline(join, argv):
    """`argv` preceded by a small python3 that enters the groups of `join` (descriptors to pass
    to the child) and then execs it."""
    import sys

    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, ",".join(str(fd) for fd in join)] + list(argv)


def _kill_member(group, pid):
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0                # gone already
    try:
        if not group._is_member(pid):
            return 0            # the pid was reused by a process outside the group
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return 1
    except ProcessLookupError:
        return 0
    finally:
        os.close(pidfd)
