"""Invocation records and logs: what each invocation of a function did, and what it wrote on stderr.

The gateway is the one process that sees every answer, so it writes one record per invocation,
with the call's stderr (its last `STDERR_KEPT` bytes: a traceback ends with its error) for
GET /function/NAME/logs. With a Store (reference/gateway/store.py) the records are in SQLite
under the functions directory and outlive the gateway, within the store's bounds; the record
is queued for the store's writer thread, so the call's answer never waits for the disk.
Without one (in-process tests) they are in memory, the last `PER_FUNCTION` of each function.

Every record has a `seq`: increasing over all functions, the cursor of `logs(since=SEQ)`.
"""

import collections
import itertools
import json
import threading
import time

from reference import config
from reference.gateway import store as store_mod

PER_FUNCTION = 100          # kept in memory (no store), and the default page of recent()
STDERR_KEPT = 4 * config.KIB
PAGE_MAX = 1000

INSERT = store_mod.INSERT_RECORD


def kept_stderr(text):
    """(the last STDERR_KEPT bytes of `text` as text, its whole size in bytes, whether it was cut)."""
    if not text:
        return "", 0, False
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= STDERR_KEPT:
        return text, len(raw), False
    tail = raw[-STDERR_KEPT:]
    return tail.decode("utf-8", errors="ignore"), len(raw), True   # "ignore": a character cut in two


class InvocationRecords:
    """Records by function name, in `store` (a Store) or in memory. Thread-safe."""

    def __init__(self, store=None, per_function=PER_FUNCTION):
        self.store = store
        self.per_function = per_function
        if store is None:
            self.kept = "in memory, last %d per function; reset when the gateway restarts" % per_function
        else:
            self.kept = ("in %s: the last %d per function, %d in all, for at most %d days"
                         % (store_mod.FILE_NAME, store_mod.PER_FUNCTION, store_mod.MAX_RECORDS,
                            store_mod.MAX_AGE_S // 86400))
        self._lock = threading.Lock()
        self._by_name = {}
        self._seq = itertools.count(1)

    def add(self, meta, status, fields, call_id=None):
        """Record one invocation of the function `meta` (storage metadata): its HTTP-like
        `status` and the answer's `fields` (output, stderr, worker, timings, ...; absent when
        the platform failed before the function ran)."""
        output = fields.get("output") or ""
        stderr, stderr_bytes, cut = kept_stderr(fields.get("stderr"))
        now = round(time.time(), 3)
        record = {
            "time": now,
            "id": meta["id"],
            "version": meta.get("version", 1),
            "status": status,
            "kind": fields.get("kind", "ok"),
            "total_ms": fields.get("duration_ms"),
            "queue_ms": fields.get("queue_ms"),
            "init_ms": fields.get("init_ms"),
            "exec_ms": fields.get("exec_ms"),
            "worker": fields.get("worker"),
            "cold": fields.get("cold"),
            "exit_code": fields.get("exit_code"),
            "output_bytes": len(output) if output.isascii() else len(output.encode("utf-8", errors="replace")),
            "truncated": fields.get("truncated", False),
            "stderr_bytes": stderr_bytes,
        }
        if cut:
            record["stderr_truncated"] = True
        if "error" in fields and status != 200:
            record["error"] = fields["error"]
        if call_id is not None:
            record["call_id"] = call_id
        if self.store is not None:
            self.store.enqueue(INSERT, (meta["name"], now, store_mod.encode_record(record), stderr))
            return record
        with self._lock:
            kept = self._by_name.get(meta["name"])
            if kept is None:
                kept = self._by_name[meta["name"]] = collections.deque(maxlen=self.per_function)
            kept.append((dict(record, seq=next(self._seq)), stderr))
        return record

    def recent(self, name, limit=PER_FUNCTION):
        """The last `limit` records of function `name`, newest first."""
        limit = max(1, min(limit, PAGE_MAX))
        if self.store is not None:
            rows = self.store.read("SELECT seq, record FROM invocations WHERE name = ? ORDER BY seq DESC "
                                   "LIMIT ?", (name, limit))
            return [dict(json.loads(record), seq=seq) for seq, record in rows]
        with self._lock:
            kept = list(self._by_name.get(name, ()))
        return [record for record, _ in reversed(kept[-limit:])]

    def logs(self, name, since=None, limit=PER_FUNCTION):
        """Log entries of function `name`, oldest first: those after cursor `since` (a record's
        seq), or the last `limit` when `since` is None; at most `limit`."""
        limit = max(1, min(limit, PAGE_MAX))
        if self.store is not None:
            if since is None:
                rows = self.store.read("SELECT seq, record, stderr FROM invocations WHERE name = ? "
                                       "ORDER BY seq DESC LIMIT ?", (name, limit))[::-1]
            else:
                rows = self.store.read("SELECT seq, record, stderr FROM invocations WHERE name = ? "
                                       "AND seq > ? ORDER BY seq LIMIT ?", (name, since, limit))
            pairs = [(dict(json.loads(record), seq=seq), stderr) for seq, record, stderr in rows]
        else:
            with self._lock:
                kept = list(self._by_name.get(name, ()))
            pairs = [p for p in kept if since is None or p[0]["seq"] > since]
            pairs = pairs[-limit:] if since is None else pairs[:limit]
        return [log_entry(record, stderr) for record, stderr in pairs]

    def forget(self, name):
        """Drop a deleted function's records, so a new function of that name starts clean."""
        if self.store is not None:
            self.store.enqueue("DELETE FROM invocations WHERE name = ?", (name,))
        with self._lock:
            self._by_name.pop(name, None)

    def close(self):
        if self.store is not None:
            self.store.close()


LOG_FIELDS = ("seq", "time", "call_id", "id", "version", "status", "kind", "worker", "exit_code",
              "stderr_bytes", "stderr_truncated", "error")


def log_entry(record, stderr):
    """A record as GET /function/NAME/logs shows it: when, which call, how it went, its stderr."""
    entry = {k: record[k] for k in LOG_FIELDS if k in record}
    entry["stderr"] = stderr
    return entry
