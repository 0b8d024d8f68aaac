"""Reading what is deployed: GET /function/NAME (with its code and versions), GET /functions
and GET /function/NAME/invocations, from the storage and the invocation records."""

from reference.wire.errors import NotFound

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
        meta = lookup(self.storage, name)
        found = self.records.recent(meta["name"])
        return {"ok": True, "name": meta["name"], "kept": self.records.kept, "count": len(found),
                "invocations": found}
