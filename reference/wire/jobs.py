"""The records that travel between processes: a Job to run and the Outcome of running it.

Both cross the wire as a frame: the JSON header holds the fields, the body the bytes
(the input for a Job; stdout then stderr for an Outcome).
"""

from dataclasses import dataclass, field

# The metadata of a field that stays in the process that set it: it never crosses the wire.
LOCAL = {"local": True}


def _shallow(record):
    """A record's wire fields as a dict, without dataclasses.asdict's deep copy: on the hot path,
    and every value here is already plain JSON or bytes."""
    return {name: getattr(record, name) for name in record.WIRE_FIELDS}


def _wire_fields(cls):
    """The names of `cls`'s fields that travel, computed once (dataclasses.fields() rebuilds a
    tuple on every call)."""
    cls.WIRE_FIELDS = tuple(name for name, f in cls.__dataclass_fields__.items() if not f.metadata.get("local"))
    return cls


@_wire_fields
@dataclass
class Job:
    """One invocation, as a worker needs it: where the function lives and what to feed it."""

    job_id: int
    fn_id: str           # "<name>_<unix seconds>", the directory under the functions tree
    fn_dir: str          # absolute path of functions/<fn_id>
    lang: str            # canonical language name (reference.functions.languages)
    input: bytes = b""   # the function's stdin
    timeout_ms: int = 5000
    memory_mb: int = 128
    output_limit: int = 1 << 20
    # The function runs in a long-lived interpreter of its own, its globals kept between calls
    # (deploy's reuse=true); by default every call gets a fresh one.
    reuse: bool = False
    # The function's environment: its env and its secrets (reference/functions/storage.py),
    # {NAME: value}, set by the gateway; {} for most functions (then the frame does not carry it).
    # Secrets travel with the job as everything else of it does: over the local sockets and
    # pipes, and with the NATS executor through the NATS servers and the JetStream stream that
    # holds jobs until a host takes them, in the clear unless NATS runs with TLS (docs/NATS.md).
    # Never in a repr (a log line that prints a Job shows no secret).
    env: dict = field(default_factory=dict, repr=False)
    # When the executor handed the job to a worker (the server's time.monotonic()): where the
    # queue time the server reports ends. The server's own clock, so not on the wire.
    started: float = field(default=None, compare=False, metadata=LOCAL)

    def to_wire(self):
        header = _shallow(self)
        body = header.pop("input")
        if not header["env"]:
            del header["env"]
        return header, body

    @classmethod
    def from_wire(cls, header, body):
        fields = {k: header[k] for k in cls.WIRE_FIELDS if k in header and k != "input"}
        if not isinstance(fields.get("env", {}), dict):
            fields["env"] = {}
        return cls(input=body, **fields)


@_wire_fields
@dataclass
class Outcome:
    """What running a Job produced. `error` is None when the function ran to its end (whatever
    its exit code), else the kind of limit or fault that stopped it: "timeout", "memory",
    "runtime" (could not start or trapped), with `message` saying what happened."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    error: str = None
    message: str = ""
    cold: bool = False
    init_ms: float = 0.0
    exec_ms: float = 0.0
    # Filled in by the server, not the worker:
    worker: int = -1
    queue_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_wire(self):
        header = _shallow(self)
        stdout, stderr = header.pop("stdout"), header.pop("stderr")
        header["stdout_len"] = len(stdout)
        return header, stdout + stderr

    @classmethod
    def from_wire(cls, header, body):
        n = header.get("stdout_len", len(body))
        fields = {k: header[k] for k in cls.WIRE_FIELDS if k in header}
        fields.pop("stdout", None)
        fields.pop("stderr", None)
        return cls(stdout=body[:n], stderr=body[n:], **fields)
