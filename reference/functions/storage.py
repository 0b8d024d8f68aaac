"""The functions tree on disk (the seed's layout): atomic deploy, lookup by name or id, restart-proof.

    functions/<id>/code.<ext>        the source as deployed
    functions/<id>/code.wasm         compiled languages: the WASI module ...
    functions/<id>/code.cwasm        ... and wasmtime's precompiled artifact of it
    functions/<id>/metadata.json     id, name, lang, size, created, wasm, limits, sha256, env, ...
    functions/<id>/secrets.json      the version's secrets, {NAME: value}: 0600, the platform's user
                                     only; metadata.json lists their names ("secrets"), never values
    functions/.names/<name> -> <id>  the claim on a name (a symlink): its current version
    functions/.names/.lock           serializes updates and deletes (flock), never deploys

How a deploy stays atomic without any lock: every file is written and fsynced in a private
temporary directory (`.tmp-*`), which is renamed to `<id>` in one step; only then is the name
claimed with `os.symlink(id, .names/<name>)`, which fails with EEXIST when another deploy got
there first. A function exists if and only if its name link points at a complete directory, so
a crash at any moment leaves either nothing or a directory nobody points at: invisible, never
in the way of a later deploy of the same name, and swept away by the next Storage() once old
enough (a younger one may be a deploy in progress in another process).

Versions: an update (`replace`) writes a new directory the same way, whose metadata names the
`previous` id and the next `version` number, then re-points the name by renaming a fresh link
over the old one (rename is atomic: a reader sees the old id or the new one, never nothing).
Old versions are kept until the function is deleted, so an invocation that already holds the
old directory finishes on it, and an old id stays invocable. A directory belongs to a function
when its id is on the chain of `previous` links from the name's current version.

Configuration: each version keeps its own `env` (in metadata.json) and secrets (secrets.json,
written 0600 before the directory is renamed into place, so no moment exists where another
user could read it). `environment(meta)` is both together, what the function's process gets.
secrets.json is not one of the files a worker host fetches (reference/executors/nats/codecache.py
ships code.* and metadata.json only): the secrets reach a worker in its Job (reference/wire/jobs.py).
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time

from reference import config
from reference.functions import languages
from reference.wire.errors import BadRequest, Conflict, FaasError, NotFound

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}_[0-9]+")
FILE_RE = re.compile(r"code\.[a-z]+")
NAMES_DIR = ".names"
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"  # inside .names: a name never starts with a dot
METADATA = "metadata.json"
SECRETS = "secrets.json"
# Leftovers younger than this may belong to a deploy still running in another process.
STALE_AFTER_S = 60.0


def check_name(name):
    """The name itself if it is a valid function name; BadRequest saying the rule otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise BadRequest(
            "invalid function name %r: use 1 to 64 letters, digits, '_' or '-', "
            "starting with a letter or digit" % (name,)
        )
    return name


def _taken(name):
    return Conflict("function name '%s' already exists, please choose another name" % name)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_file(path, data):
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_private(path, data):
    """A new file only its owner may read or write (0600 whatever the umask), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)
        f.write(data)
        f.flush()
        os.fsync(fd)


class Storage:
    """The functions tree under `root`. Safe to share between threads and between processes.

    A version's directory never changes once written, so its metadata read once is cached;
    which version a name points at is read from its link at every lookup.
    """

    def __init__(self, root, limits=config.LIMITS):
        self.root = os.path.abspath(root)
        self.names = os.path.join(self.root, NAMES_DIR)
        self.limits = limits
        self._cache = {}  # id -> metadata (with "dir") of complete version directories
        self._secrets = {}  # id -> the secrets of that version, once read
        try:
            os.makedirs(self.names, exist_ok=True)
        except OSError as exc:
            raise FaasError("cannot create the functions directory %s: %s" % (self.root, exc)) from None
        self.sweep(STALE_AFTER_S)

    # -- deploy ---------------------------------------------------------------------------

    def deploy(self, name, lang, files, meta=None, secrets=None):
        """Store a new function and return its metadata (as written to metadata.json).

        `files` maps file names (`code.<ext>`, `code.wasm`, `code.cwasm`) to their bytes and
        must hold the source `code.<ext>`; `meta` adds fields (compile_ms, toolchain, wasm_size,
        timeout_ms, memory_mb, env, ...); `secrets` ({NAME: value}, checked by the caller) go
        into secrets.json, their names into the metadata's "secrets". Raises BadRequest for a
        bad name or file set, Conflict when the name is taken (even by a deploy that won a race
        a moment ago).
        """
        language = self._check_files(name, lang, files)
        self.check_available(name)
        created = int(time.time())
        fn_id = self._fresh_id(name, created)
        metadata = self._metadata(fn_id, name, language, files, meta, created, version=1, secrets=secrets)
        self._store_version(fn_id, files, metadata, secrets)
        try:
            os.symlink(fn_id, os.path.join(self.names, name))
        except OSError as exc:
            # Lost the race for the name (or the disk failed): our directory is an orphan.
            shutil.rmtree(os.path.join(self.root, fn_id), ignore_errors=True)
            if exc.errno == errno.EEXIST:
                raise _taken(name) from None
            raise FaasError("cannot store function %r: %s" % (name, exc)) from None
        _fsync_dir(self.names)
        log.info("deployed %s (%s, %d bytes)", fn_id, language.name, metadata["size"])
        return dict(metadata)

    def replace(self, name, lang, files, meta=None, secrets=None):
        """Store a new version of an existing function and point its name at it; the new
        metadata (with `version` and `previous`). Same `files`, `meta` and `secrets` as deploy
        (the caller decides what carries over from the current version); raises
        NotFound when no function holds the name. Concurrent updates are serialized, each
        getting its own version number."""
        language = self._check_files(name, lang, files)
        with self._locked():
            current_id = self._claimed_id(name)
            current = self._load(current_id) if current_id else None
            if current is None:
                raise NotFound("function not found", fn=name)
            created = int(time.time())
            fn_id = self._fresh_id(name, created)
            metadata = self._metadata(fn_id, name, language, files, meta, created,
                                      version=current.get("version", 1) + 1, secrets=secrets)
            metadata["previous"] = current["id"]
            self._store_version(fn_id, files, metadata, secrets)
            link = os.path.join(self.names, name)
            tmp_link = os.path.join(self.names, "%s%s-%d" % (TMP_PREFIX, name, os.getpid()))
            try:
                os.symlink(fn_id, tmp_link)
                os.rename(tmp_link, link)
            except OSError as exc:
                _unlink_quietly(tmp_link)
                shutil.rmtree(os.path.join(self.root, fn_id), ignore_errors=True)
                raise FaasError("cannot update function %r: %s" % (name, exc)) from None
            _fsync_dir(self.names)
        log.info("updated %s to version %d (%s)", name, metadata["version"], fn_id)
        return dict(metadata)

    def delete(self, name):
        """Remove a function: its name first (new calls see 404 at once), then every version's
        directory. Returns the removed ids, newest first; NotFound if no function holds the name."""
        check_name(name)
        with self._locked():
            ids = [meta["id"] for meta in self.versions(name)]
            if not ids:
                raise NotFound("function not found", fn=name)
            os.unlink(os.path.join(self.names, name))
            _fsync_dir(self.names)
            for fn_id in ids:
                self._cache.pop(fn_id, None)
                self._secrets.pop(fn_id, None)
                # A crash in this loop leaves directories no name points at: the sweep's business.
                shutil.rmtree(os.path.join(self.root, fn_id), ignore_errors=True)
        log.info("deleted %s (%d version%s)", name, len(ids), "" if len(ids) == 1 else "s")
        return ids

    def check_available(self, name):
        """Conflict (409) unless `name` may be deployed: no function holds it, and it is not the
        id of any kept version of another function, which lookups try first and would shadow it."""
        if self.exists(name):
            raise _taken(name)
        owner = self._load(name) if ID_RE.fullmatch(name) else None
        if owner is not None:
            raise Conflict("function name '%s' is the id of a version of function '%s': a name that "
                           "equals an id would be shadowed by it, please choose another name"
                           % (name, owner["name"]), owner=owner["name"])

    def _fresh_id(self, name, created):
        """`name_<created>`, unique: another version of the same second (an update), or a
        function whose name is that very id, makes it take a suffix (still sorted)."""
        fn_id, suffix = "%s_%d" % (name, created), 2
        while os.path.lexists(os.path.join(self.root, fn_id)) or os.path.lexists(os.path.join(self.names, fn_id)):
            fn_id = "%s_%d_%d" % (name, created, suffix)
            suffix += 1
        return fn_id

    def _check_files(self, name, lang, files):
        check_name(name)
        language = languages.resolve(lang)
        source_file = "code.%s" % language.ext
        if source_file not in files:
            raise BadRequest("the files of a %s function must include %s" % (language.name, source_file))
        for filename in files:
            if not FILE_RE.fullmatch(filename):
                raise BadRequest("invalid file name %r for a function" % (filename,))
        return language

    def _metadata(self, fn_id, name, language, files, meta, created, version, secrets=None):
        source = files["code.%s" % language.ext]
        metadata = {
            "timeout_ms": self.limits.timeout_ms,
            "memory_mb": self.limits.memory_mb,
        }
        metadata.update({k: v for k, v in (meta or {}).items() if k not in ("dir", "previous", "secrets")})
        metadata.update({
            "id": fn_id,
            "name": name,
            "lang": language.name,
            "size": len(source),
            "created": created,
            "wasm": "code.wasm" in files,
            "sha256": hashlib.sha256(source).hexdigest(),
            "version": version,
        })
        if secrets:
            metadata["secrets"] = sorted(secrets)   # the names only: metadata.json is public
        return metadata

    def _store_version(self, fn_id, files, metadata, secrets=None):
        """Write a complete directory under a temporary name and rename it to `fn_id`."""
        final = os.path.join(self.root, fn_id)
        tmp = self._write_tmp(files, metadata, secrets)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            # A directory already holds this id: the same name deployed in the same second.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise _taken(metadata["name"]) from None
            raise FaasError("cannot store function %r: %s" % (metadata["name"], exc)) from None
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive flock: updates and deletes wait for each other, across threads and
        processes (each open file description is a lock owner of its own)."""
        fd = os.open(os.path.join(self.names, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_tmp(self, files, metadata, secrets=None):
        """A complete, fsynced function directory under a temporary name; its path. The
        secrets file is made 0600 from the start (never a moment with a wider mode)."""
        try:
            tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root)
        except OSError as exc:
            raise FaasError("cannot store function: %s" % exc) from None
        try:
            for filename, data in files.items():
                _write_file(os.path.join(tmp, filename), data)
            text = json.dumps(metadata, indent=2, sort_keys=True).encode()
            _write_file(os.path.join(tmp, METADATA), text)
            if secrets:
                _write_private(os.path.join(tmp, SECRETS), json.dumps(secrets, sort_keys=True).encode())
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; workers may run as another user
            _fsync_dir(tmp)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise FaasError("cannot store function: %s" % exc) from None
            raise
        return tmp

    # -- lookup ---------------------------------------------------------------------------

    def get(self, name_or_id):
        """The metadata of a function, found by id or by name, plus "dir"; None if unknown.
        An old version's id finds that version while it is kept (until the function is deleted)."""
        if not isinstance(name_or_id, str):
            return None
        # An id is tried first: it is what deploy answered, and it names exactly one directory.
        if ID_RE.fullmatch(name_or_id):
            meta = self._load(name_or_id)
            if meta is not None:
                return dict(meta)
        if NAME_RE.fullmatch(name_or_id):
            fn_id = self._claimed_id(name_or_id)
            if fn_id is not None:
                meta = self._read(fn_id)    # the version the name points at: current
                if meta is not None and meta.get("name") != name_or_id:
                    meta = None             # a link to another function's directory: not it
                if meta is not None:
                    return dict(meta)
        return None

    def versions(self, name):
        """The metadata of every kept version of a function, newest first; [] if unknown."""
        fn_id = self._claimed_id(name) if NAME_RE.fullmatch(str(name)) else None
        found = []
        while fn_id is not None and len(found) <= 10_000:  # a bound against a corrupted loop
            meta = self._read(fn_id)
            if meta is None or meta.get("name") != name:
                break
            found.append(dict(meta))
            fn_id = meta.get("previous")
        return found

    def exists(self, name):
        """Whether a complete function holds this name."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return False
        fn_id = self._claimed_id(name)
        return fn_id is not None and self._load(fn_id) is not None

    def code(self, meta):
        """The source bytes of a function, from its metadata."""
        ext = languages.resolve(meta["lang"]).ext
        with open(os.path.join(self.root, meta["id"], "code.%s" % ext), "rb") as f:
            return f.read()

    def files(self, meta):
        """Every code file of a version ({name: bytes}: the source, and code.wasm and code.cwasm
        for a compiled language), as deploy was given them: what a rollback stores again."""
        directory = os.path.join(self.root, meta["id"])
        found = {}
        for name in sorted(os.listdir(directory)):
            if FILE_RE.fullmatch(name):
                with open(os.path.join(directory, name), "rb") as f:
                    found[name] = f.read()
        return found

    def secrets(self, meta):
        """A version's secrets, {NAME: value} ({} when it has none). Cached: versions never change."""
        if not meta.get("secrets"):
            return {}
        cached = self._secrets.get(meta["id"])
        if cached is None:
            try:
                with open(os.path.join(self.root, meta["id"], SECRETS), "rb") as f:
                    cached = json.loads(f.read())
            except (OSError, ValueError) as exc:
                raise FaasError("cannot read the secrets of %s: %s" % (meta["id"], exc)) from None
            if not isinstance(cached, dict):
                raise FaasError("cannot read the secrets of %s: not a JSON object" % meta["id"])
            self._secrets[meta["id"]] = cached
        return dict(cached)

    def environment(self, meta):
        """What a version's process gets in its environment: its env, then its secrets."""
        env = dict(meta.get("env") or {})
        env.update(self.secrets(meta))
        return env

    def list(self):
        """The metadata (with "dir") of every function, sorted by name."""
        try:
            names = sorted(os.listdir(self.names))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            fn_id = self._claimed_id(name)
            meta = self._load(fn_id) if fn_id else None
            if meta is not None:
                found.append(dict(meta))
        return found

    def _claimed_id(self, name):
        try:
            fn_id = os.readlink(os.path.join(self.names, name))
        except OSError:
            return None
        return fn_id if ID_RE.fullmatch(fn_id) else None

    def _load(self, fn_id):
        """Metadata of a version of a live function: its name link points at it, or at a later
        version whose chain of `previous` ids reaches it. None otherwise."""
        meta = self._read(fn_id)
        if meta is None:
            return None
        name = str(meta.get("name"))
        if self._claimed_id(name) == fn_id:
            return meta  # the current version: the common case, one readlink
        # A directory nobody's name reaches is a crash leftover, a race loser, or deleted.
        if fn_id not in (m["id"] for m in self.versions(name)):
            return None
        return meta

    def _read(self, fn_id):
        """The metadata.json of directory `fn_id` (cached: versions never change), or None."""
        if not isinstance(fn_id, str) or not ID_RE.fullmatch(fn_id):
            return None
        meta = self._cache.get(fn_id)
        if meta is not None:
            return meta
        directory = os.path.join(self.root, fn_id)
        try:
            with open(os.path.join(directory, METADATA), "rb") as f:
                meta = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("id") != fn_id:
            return None
        meta["dir"] = directory
        self._cache[fn_id] = meta
        return meta

    # -- cleaning -------------------------------------------------------------------------

    def sweep(self, min_age_s=STALE_AFTER_S):
        """Remove leftovers of interrupted deploys older than `min_age_s`: temporary
        directories, directories no name points at, and name links pointing at nothing.
        Returns how many entries were removed."""
        now = time.time()
        removed = 0
        for entry in os.scandir(self.root):
            if entry.name == NAMES_DIR or not entry.is_dir(follow_symlinks=False):
                continue
            is_tmp = entry.name.startswith(TMP_PREFIX)
            if not is_tmp and (not ID_RE.fullmatch(entry.name) or self._load(entry.name)):
                continue
            if now - _mtime(entry) < min_age_s:  # young: maybe a deploy still running elsewhere
                continue
            log.info("removing leftover of an interrupted deploy: %s", entry.name)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
        for entry in os.scandir(self.names):
            # An update's temporary link (it crashed before the rename), or a link to nothing.
            try:
                dangling = entry.is_symlink() and (entry.name.startswith(TMP_PREFIX) or not os.path.isdir(
                    os.path.join(self.root, os.readlink(entry.path))))
            except FileNotFoundError:
                continue
            if dangling and now - _mtime(entry) >= min_age_s:
                log.info("removing a name link to nothing: %s", entry.name)
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += 1
        return removed


def _mtime(entry):
    """An entry's age stamp; one that vanished meanwhile (another process finished its deploy,
    or swept it first) counts as brand new, so it is left alone."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")
