"""Reading what is deployed: GET /function/NAME (with its code and versions), GET /functions,
GET /function/NAME/invocations and GET /function/NAME/logs, from the storage and the
invocation records (reference/gateway/records.py)."""

from reference.gateway import parse
from reference.gateway.records import PAGE_MAX, PER_FUNCTION
from reference.wire.errors import BadRequest, NotFound

# Fields of a function's metadata that are the server's business, not the user's.
PRIVATE_FIELDS = ("dir",)


def public(meta):
    """A function's metadata as clients see it."""
    return {k: v for k, v in meta.items() if k not in PRIVATE_FIELDS}


def lookup(storage, name_or_id):
    """The metadata of a function by name or id; NotFound (404) otherwise."""
    meta = storage.get(name_or_id) if name_or_id else None
    if meta is None:
        raise NotFound("function not found", fn=name_or_id)
    return meta


class CatalogRoutes:
    def __init__(self, storage, records):
        self.storage, self.records = storage, records

    def function(self, name):
        """The function (its current version, or the version an id names), with its code and
        the list of kept versions."""
        meta = lookup(self.storage, name)
        code = self.storage.code(meta).decode("utf-8", errors="replace")
        versions = [{"id": v["id"], "version": v.get("version", 1), "created": v["created"]}
                    for v in self.storage.versions(meta["name"])]
        return dict(public(meta), ok=True, code=code, version=meta.get("version", 1),
                    current=bool(versions) and versions[0]["id"] == meta["id"], versions=versions)

    def functions(self):
        found = [public(meta) for meta in self.storage.list()]
        return {"ok": True, "count": len(found), "functions": found}

    def invocations(self, name):
        """The function's last invocation records, newest first (?limit=N, default 100, at most
        1000)."""
        meta = lookup(self.storage, name)
        found = self.records.recent(meta["name"], whole_query("limit", PER_FUNCTION))
        return {"ok": True, "name": meta["name"], "kept": self.records.kept, "count": len(found),
                "invocations": found}

    def logs(self, name):
        """The function's log: one entry per call, oldest first, with its time (Unix seconds),
        call_id, status, kind, worker, exit_code and stderr (its last 4 KiB; stderr_bytes is
        its whole size, stderr_truncated says it was cut). ?since=SEQ gives the entries after
        the cursor SEQ (each entry's "seq"; the answer's "next" is the one to ask with next
        time: polling with it gives every entry once); without it, the last ?limit=N (default
        100, at most 1000)."""
        meta = lookup(self.storage, name)
        since = whole_query("since", None, floor=0, ceiling=2 ** 62)   # SQLite's integers are 64-bit
        entries = self.records.logs(meta["name"], since, whole_query("limit", PER_FUNCTION))
        last = entries[-1]["seq"] if entries else since
        return {"ok": True, "name": meta["name"], "kept": self.records.kept, "count": len(entries),
                "next": last if last is not None else 0, "logs": entries}


def whole_query(name, default, floor=1, ceiling=None):
    """A whole-number query parameter, default when absent; BadRequest when not one."""
    value = parse.query(name)
    if value is None or value == "":
        return default
    ceiling = PAGE_MAX if ceiling is None and name == "limit" else ceiling
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < floor or (ceiling is not None and number > ceiling):
        raise BadRequest("%s must be a whole number%s, got %r"
                         % (name, " from %d to %d" % (floor, ceiling) if ceiling else " >= %d" % floor, value))
    return number
