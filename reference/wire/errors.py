"""One error hierarchy for the whole platform, and its single mapping to HTTP statuses.

Errors cross process boundaries as a `kind` string plus a message (`to_wire`/`from_wire`),
so the gateway answers a failure in the server or balancer with the same status as a local one.
"""


class FaasError(Exception):
    """A failure a user can act on. `status` is the HTTP answer, `kind` its stable name."""

    status = 500
    kind = "internal"

    def __init__(self, message, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_dict(self):
        """The JSON body of the HTTP answer: `ok`, `error`, `kind` and any extra fields."""
        body = {"ok": False, "error": self.message, "kind": self.kind}
        body.update(self.extra)
        return body

    def to_wire(self):
        # "fault", not "error": an Outcome's own `error` field names a function's limit.
        return {"fault": self.kind, "message": self.message, "extra": self.extra}


class BadRequest(FaasError):
    status, kind = 400, "bad_request"


class Unauthorized(FaasError):
    status, kind = 401, "unauthorized"


class NotFound(FaasError):
    status, kind = 404, "not_found"


class MethodNotAllowed(FaasError):
    status, kind = 405, "method_not_allowed"


class Conflict(FaasError):
    status, kind = 409, "conflict"


class PayloadTooLarge(FaasError):
    status, kind = 413, "too_large"


class CompileError(FaasError):
    status, kind = 422, "compile_error"


class Overloaded(FaasError):
    status, kind = 429, "overloaded"


class FunctionFailed(FaasError):
    """The function ran and exited non-zero (or trapped)."""

    status, kind = 500, "function_error"


class MemoryLimit(FaasError):
    status, kind = 500, "memory_limit"


class ToolchainMissing(FaasError):
    status, kind = 503, "toolchain_missing"


class Unavailable(FaasError):
    """A component of the chain (server, balancer, workers) does not answer."""

    status, kind = 503, "unavailable"


class WorkerLost(FaasError):
    """The worker running the invocation died before answering."""

    status, kind = 502, "worker_lost"


class Timeout(FaasError):
    status, kind = 504, "timeout"


class ProtocolError(FaasError):
    """A malformed frame between two processes of the platform: a bug, never user input."""

    status, kind = 500, "protocol"


_BY_KIND = {cls.kind: cls for cls in FaasError.__subclasses__()}
_BY_KIND[FaasError.kind] = FaasError


def from_wire(wire):
    """Rebuild the error another process sent with `to_wire`."""
    cls = _BY_KIND.get(wire.get("fault"), FaasError)
    return cls(wire.get("message", "internal error"), **(wire.get("extra") or {}))
