"""Invocation records: what the last invocations of each function did, kept in the gateway's memory.

The gateway is the one process that sees every answer, so it writes one record per invocation;
a bounded deque per function keeps memory flat, and a restart starts them afresh.
"""

import collections
import threading
import time

PER_FUNCTION = 100


class InvocationRecords:
    """The last `per_function` invocation records of each function name. Thread-safe."""

    def __init__(self, per_function=PER_FUNCTION):
        self.per_function = per_function
        self.kept = "in memory, last %d per function; reset when the gateway restarts" % per_function
        self._lock = threading.Lock()
        self._by_name = {}

    def add(self, meta, status, fields, call_id=None):
        """Record one invocation of the function `meta` (storage metadata): its HTTP-like
        `status` and the answer's `fields` (output, worker, timings, ...; absent when the
        platform failed before the function ran)."""
        output = fields.get("output") or ""
        record = {
            "time": round(time.time(), 3),
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
            "output_bytes": len(output.encode("utf-8", errors="replace")),
            "truncated": fields.get("truncated", False),
        }
        if call_id is not None:
            record["call_id"] = call_id
        with self._lock:
            kept = self._by_name.get(meta["name"])
            if kept is None:
                kept = self._by_name[meta["name"]] = collections.deque(maxlen=self.per_function)
            kept.append(record)
        return record

    def recent(self, name):
        """The records of function `name`, newest first."""
        with self._lock:
            return list(reversed(self._by_name.get(name, ())))

    def forget(self, name):
        """Drop a deleted function's records, so a new function of that name starts clean."""
        with self._lock:
            self._by_name.pop(name, None)
