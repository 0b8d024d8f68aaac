"""Function code by content digest: the server side serves a function directory's files, a
worker host fetches them once over NATS and keeps them in its cache directory.

A function directory never changes once deployed, so its digest (sha256 over the names and
bytes of the files a worker needs) names its content for good: a host that has the digest
has the function, whatever machine deployed it and whatever path it had there.
"""

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile

from reference.wire import framing
from reference.wire.errors import FaasError, NotFound, Unavailable, from_wire

log = logging.getLogger(__name__)

# What a worker needs of a function directory: the source or module, wasmtime's artifact (a
# host whose wasmtime differs compiles code.wasm instead, see reference.worker.wasm.engine.load_module) and
# the metadata (shipped_files).
# Files go in pieces well under NATS's default 1 MB max_payload.
CHUNK = 512 * 1024
FETCH_TIMEOUT_S = 10.0
# The most a function directory may hold (its code, wasmtime's artifact and the metadata).
MAX_CODE_BYTES = 256 << 20
# The names a deploy writes (reference.functions.storage): `code.<ext>`, then metadata.json.
FILE_RE = re.compile(r"code\.[a-z]+")
CODE_SUBJECT = "faas.code"


def pack(header, body=b""):
    """One NATS payload: the platform's frame format (reference.wire.framing), header and body."""
    return framing.encode(header, body)


def unpack(data):
    """(header dict, body bytes) of a payload made by `pack`."""
    if len(data) < framing.PREFIX.size:
        raise framing.ProtocolError("NATS payload shorter than a frame prefix")
    head_len, body_len = framing.PREFIX.unpack_from(data)
    start = framing.PREFIX.size
    if len(data) != start + head_len + body_len:
        raise framing.ProtocolError("NATS payload length does not match its frame prefix")
    header = json.loads(data[start:start + head_len])
    return header, data[start + head_len:]


def check_listing(listing):
    """{name: size} of a code listing, each name one a deploy could have written (`code.<ext>`
    or metadata.json: no directory, no '..') and the sizes within bounds; else refused."""
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, dict) or not files:
        raise FaasError("malformed code listing: refused")
    for name, size in files.items():
        if not (isinstance(name, str) and (FILE_RE.fullmatch(name) or name == "metadata.json")):
            raise FaasError("code listing names the file %r: refused" % (name,))
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_CODE_BYTES:
            raise FaasError("code listing gives %s a size of %r: refused" % (name, size))
    if sum(files.values()) > MAX_CODE_BYTES:
        raise FaasError("code listing of %d bytes: refused" % sum(files.values()))
    return files


def shipped_files(fn_dir):
    return sorted(name for name in os.listdir(fn_dir) if FILE_RE.fullmatch(name) or name == "metadata.json")


class CodeServer:
    """The server side: digest of each function directory, and its files served in chunks."""

    def __init__(self):
        self.digests = {}   # fn_dir -> digest
        self.dirs = {}      # digest -> fn_dir

    def digest(self, fn_dir):
        """The content digest of fn_dir, computed once (a deployed function never changes)."""
        digest = self.digests.get(fn_dir)
        if digest is None:
            h = hashlib.sha256()
            for name in shipped_files(fn_dir):
                with open(os.path.join(fn_dir, name), "rb") as f:
                    data = f.read()
                h.update(b"%s\0%d\0" % (name.encode(), len(data)))
                h.update(data)
            digest = h.hexdigest()
            self.digests[fn_dir], self.dirs[digest] = digest, fn_dir
        return digest

    def answer(self, request):
        """The reply to a code request: {"digest"} lists the files and sizes; {"digest",
        "file", "offset"} gives up to CHUNK bytes of one file."""
        header, _ = unpack(request)
        fn_dir = self.dirs.get(header.get("digest"))
        if fn_dir is None or not os.path.isdir(fn_dir):
            return pack(NotFound("no function with digest %s here" % header.get("digest")).to_wire())
        name = header.get("file")
        if name is None:
            files = {n: os.path.getsize(os.path.join(fn_dir, n)) for n in shipped_files(fn_dir)}
            return pack({"files": files})
        if name not in shipped_files(fn_dir):
            return pack(NotFound("no file %r in that function" % name).to_wire())
        with open(os.path.join(fn_dir, name), "rb") as f:
            f.seek(int(header.get("offset", 0)))
            return pack({"file": name}, f.read(CHUNK))


class CodeCache:
    """The worker host side: digest -> local directory, fetched once, kept across restarts."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.fetching = {}   # digest -> Future of the directory, so concurrent jobs ask once
        self.fetches = 0     # digests fetched over NATS
        self.hits = 0        # jobs whose code was already here

    async def get(self, nc, digest):
        """The local directory holding `digest`'s files, fetched from the server if absent."""
        if not all(c in "0123456789abcdef" for c in digest) or len(digest) != 64:
            raise FaasError("malformed code digest %r" % digest)
        path = os.path.join(self.root, digest)
        if os.path.isdir(path):
            self.hits += 1
            return path
        if digest not in self.fetching:
            self.fetching[digest] = asyncio.ensure_future(self._fetch(nc, digest, path))
            self.fetching[digest].add_done_callback(lambda _: self.fetching.pop(digest, None))
        return await asyncio.shield(self.fetching[digest])

    async def _fetch(self, nc, digest, path):
        """Every file of `digest` into memory, checked against the digest (which came with a
        job, from the platform), then written under names checked like a deploy's: nothing
        from the answer is written anywhere unless it is the code the job asked for."""
        subject = "%s.%s" % (CODE_SUBJECT, digest)
        listing, _ = await self._ask(nc, subject, {"digest": digest})
        files = check_listing(listing)
        contents, h = {}, hashlib.sha256()
        for name, size in sorted(files.items()):
            data = bytearray()
            while len(data) < size:
                _, chunk = await self._ask(nc, subject, {"digest": digest, "file": name, "offset": len(data)})
                if not chunk or len(data) + len(chunk) > size:
                    raise Unavailable("code of %s: %s is not the %d bytes announced" % (digest[:12], name, size))
                data += chunk
            h.update(b"%s\0%d\0" % (name.encode(), len(data)))
            h.update(data)
            contents[name] = bytes(data)
        if h.hexdigest() != digest:
            raise FaasError("code fetched for %s does not match its digest: refused" % digest[:12])
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.root)
        try:
            for name, data in contents.items():
                fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            os.chmod(tmp, 0o755)    # mkdtemp's 0700 would hide the code from a sandbox uid
            os.rename(tmp, path)    # atomic: a directory named by its digest is always complete
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.isdir(path):  # another host process sharing this cache got there first
                return path
            raise FaasError("could not cache code %s: %s" % (digest[:12], exc)) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.fetches += 1
        log.info("fetched code %s (%s)", digest[:12], ", ".join(sorted(files)))
        return path

    async def _ask(self, nc, subject, header):
        try:
            msg = await nc.request(subject, pack(header), timeout=FETCH_TIMEOUT_S)
        except Exception as exc:  # nats raises its own timeout and no-responders errors
            raise Unavailable("could not fetch function code %s: %s" % (header["digest"][:12], exc or type(exc).__name__)) from None
        answer, body = unpack(msg.data)
        if "fault" in answer:
            raise from_wire(answer)
        return answer, body
