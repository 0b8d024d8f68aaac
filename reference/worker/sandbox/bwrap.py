"""The command line that starts a program in a bubblewrap sandbox as an unprivileged uid.

`setpriv` drops to the function's own uid (no groups, no capabilities) and bwrap, now
unprivileged, makes a user namespace holding only that uid with new mount, pid, network, ipc,
uts and cgroup namespaces: the sandbox sees read-only the system's /usr (and the runtime's own
tree when it lives elsewhere), a few files of /etc the loader needs, its own /proc, a minimal
/dev, private tmpfs /tmp and /dev/shm (gone with the sandbox), and the directories bound in.
The network namespace has nothing but its own `lo`. bwrap sets no_new_privs, starts a new
session (no TIOCSTI into a terminal), dies with the worker, and forbids nested user namespaces.

Compilers use the `privileged` form: bwrap runs as root (so it can bind a toolchain that lives
under a directory only root may enter, such as a virtualenv under /root) without a user
namespace, and setpriv inside the sandbox drops to the uid, every capability and the bounding
set before the compiler starts.
"""

import os
import shutil

BWRAP_CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap")
SETPRIV_CANDIDATES = ("/usr/bin/setpriv", "/bin/setpriv")
# What the dynamic loader and a few libc calls read in /etc; nothing of users, hosts or secrets.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
TMPFS_BYTES = 256 << 20     # each of /tmp and /dev/shm; memory in them counts in the cgroup too
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


def find(candidates, name):
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def bwrap_path():
    return find(BWRAP_CANDIDATES, "bwrap")


def setpriv_path():
    return find(SETPRIV_CANDIDATES, "setpriv")


def tree_of(executable):
    """The install tree an executable outside /usr needs bound (its bin/'s parent), or None."""
    real = os.path.realpath(executable)
    if real.startswith("/usr/"):
        return None
    return os.path.dirname(os.path.dirname(real))


def _drop(uid):
    return [setpriv_path(), "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--"]


def _parents(path, privileged):
    """Directories bwrap would make 0700 on the way to a mount point: made 0755 first."""
    if not privileged:
        return []
    out, parts = [], path.strip("/").split("/")[:-1]
    for i in range(len(parts)):
        out += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i + 1])]
    return out


def argv(command, uid, binds=(), ro_binds=(), chdir="/", trees=(), hostname="function", tmpfs_bytes=TMPFS_BYTES,
         privileged=False, seccomp_fd=None, extra=()):
    """The argv that runs `command` (a list) sandboxed as `uid`.

    binds / ro_binds: (host path, sandbox path) pairs, writable / read-only;
    trees: host directories bound read-only at the same path (a toolchain under /root/.rustup);
    privileged: bwrap as root, dropping to `uid` inside (see the module's docstring);
    seccomp_fd: a descriptor holding a seccomp program (reference/worker/sandbox/seccomp.py);
    extra: more bwrap arguments, after the mounts (--dir, --file, --tmpfs of the caller's)."""
    bwrap = bwrap_path()
    common = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
              "--die-with-parent", "--new-session", "--hostname", hostname]
    if privileged:
        out = [bwrap] + common + ["--unshare-cgroup", "--cap-add", "CAP_SETUID,CAP_SETGID,CAP_SETPCAP"]
    else:
        out = _drop(uid) + [bwrap, "--unshare-user", "--unshare-cgroup-try", "--disable-userns",
                            "--cap-drop", "ALL"] + common
    out += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    for name in ETC_FILES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            out += _parents(path, privileged) + ["--ro-bind", path, path]
    # The private /tmp before the trees and binds: a later mount covers an earlier one, and a
    # toolchain may live under /tmp (a checkout there, whose .tox holds go or node).
    out += ["--proc", "/proc", "--dev", "/dev",
            "--perms", "01777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
            "--perms", "01777", "--size", str(tmpfs_bytes), "--tmpfs", "/dev/shm"]
    for tree in trees:
        if tree and os.path.isdir(tree) and not tree.startswith("/usr/"):
            out += _parents(tree, privileged) + ["--ro-bind", tree, tree]
    for host, inside in ro_binds:
        out += _parents(inside, privileged) + ["--ro-bind", host, inside]
    for host, inside in binds:
        out += _parents(inside, privileged) + ["--bind", host, inside]
    out += list(extra)
    if seccomp_fd is not None:
        out += ["--seccomp", str(seccomp_fd)]
    out += ["--chdir", chdir, "--"]
    return out + (_drop(uid) if privileged else []) + list(command)
