"""Scenario files (TOML): parse and validate them fully before any stack starts.

Every error names the file and the field, e.g. "scenarios/x.toml: phases[1].rate must be a
positive number", so a typo costs seconds rather than a half-finished run.
"""

import dataclasses
import os
import re
import tomllib

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
KINDS = ("closed", "open", "trace")
TRACE_FORMATS = ("azure2021",)

TOP_FIELDS = {"name", "description", "workers", "strategies", "repeat", "functions", "phases"}
FUNCTION_FIELDS = {"name", "lang", "source", "input", "timeout_ms", "memory_mb"}
COMMON_PHASE_FIELDS = {"name", "kind", "input", "inputs"}
PHASE_FIELDS = {
    "closed": COMMON_PHASE_FIELDS | {"function", "threads", "requests"},
    "open": COMMON_PHASE_FIELDS | {"rate", "duration", "mix", "senders", "seed"},
    "trace": COMMON_PHASE_FIELDS | {"file", "format", "speedup", "functions", "senders", "limit",
                                    "input_from_duration", "max_input_ms"},
}
DEFAULT_SENDERS = 32


class ScenarioError(ValueError):
    """A scenario file that cannot run; the message names the file and the field."""


@dataclasses.dataclass
class Function:
    name: str
    lang: str
    source: str            # resolved path of the source file
    input: object = None   # default input of every invocation of this function
    timeout_ms: int = None
    memory_mb: int = None


@dataclasses.dataclass
class Phase:
    name: str
    kind: str
    input: object = None
    inputs: dict = dataclasses.field(default_factory=dict)
    # closed
    function: str = None
    threads: int = None
    requests: int = None
    # open
    rate: float = None
    duration: float = None
    mix: dict = None
    seed: int = 0
    senders: int = DEFAULT_SENDERS
    # trace
    file: str = None
    format: str = None
    speedup: float = 1.0
    functions: list = None
    limit: int = None
    input_from_duration: bool = False
    max_input_ms: float = 1000.0

    def input_for(self, function):
        """What one invocation of `function` (a Function) sends: phase per-function, phase, function."""
        if function.name in self.inputs:
            return self.inputs[function.name]
        if self.input is not None:
            return self.input
        return function.input if function.input is not None else ""


@dataclasses.dataclass
class Scenario:
    path: str
    name: str
    description: str
    workers: int
    strategies: list
    repeat: int
    functions: list
    phases: list
    raw: dict   # the file as read, stored in the result so a report shows what ran

    def function(self, name):
        return next(f for f in self.functions if f.name == name)


def load(path):
    """Read and validate one scenario file; raise ScenarioError naming the file and field."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ScenarioError("%s: cannot read: %s" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError("%s: not valid TOML: %s" % (path, e)) from None
    return parse(raw, path)


def parse(raw, path):
    v = _Validator(path)
    v.known(raw, TOP_FIELDS, "")
    name = v.string(raw, "name", "", default=os.path.splitext(os.path.basename(path))[0])
    if not NAME_RE.match(name):
        v.fail("name", "must be letters, digits, '_' or '-' (it names the results directory)")
    description = v.string(raw, "description", "", default="")
    workers = v.positive_int(raw, "workers", "", default=4)
    repeat = v.positive_int(raw, "repeat", "", default=1)
    strategies = raw.get("strategies", ["RR", "FIFO"])
    if (not isinstance(strategies, list) or not strategies
            or not all(isinstance(s, str) and s for s in strategies)):
        v.fail("strategies", "must be a non-empty list of strategy names")
    if len(set(strategies)) != len(strategies):
        v.fail("strategies", "names a strategy twice")

    functions = [_function(v, f, i) for i, f in enumerate(v.table_list(raw, "functions"))]
    names = [f.name for f in functions]
    for i, n in enumerate(names):
        if n in names[:i]:
            v.fail("functions[%d].name" % i, "'%s' is deployed twice" % n)
    phases = [_phase(v, p, i, set(names)) for i, p in enumerate(v.table_list(raw, "phases"))]
    seen = set()
    for i, p in enumerate(phases):
        if p.name in seen:
            v.fail("phases[%d].name" % i, "'%s' is used by two phases" % p.name)
        seen.add(p.name)
    return Scenario(path=path, name=name, description=description, workers=workers,
                    strategies=list(strategies), repeat=repeat, functions=functions,
                    phases=phases, raw=raw)


def _function(v, raw, i):
    where = "functions[%d]." % i
    v.known(raw, FUNCTION_FIELDS, where)
    name = v.string(raw, "name", where)
    if not NAME_RE.match(name):
        v.fail(where + "name", "'%s' is not a valid function name" % name)
    lang = v.string(raw, "lang", where)
    source = v.existing_file(raw, "source", where)
    return Function(name=name, lang=lang, source=source, input=raw.get("input"),
                    timeout_ms=v.positive_int(raw, "timeout_ms", where, default=None),
                    memory_mb=v.positive_int(raw, "memory_mb", where, default=None))


def _phase(v, raw, i, function_names):
    where = "phases[%d]." % i
    kind = raw.get("kind")
    if kind not in KINDS:
        v.fail(where + "kind", "must be one of %s" % ", ".join(KINDS))
    v.known(raw, PHASE_FIELDS[kind], where)
    phase = Phase(name=v.string(raw, "name", where, default="phase%d" % (i + 1)), kind=kind,
                  input=raw.get("input"))
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        v.fail(where + "inputs", "must be a table of function name = input")
    for fn in inputs:
        v.known_function(fn, function_names, where + "inputs." + fn)
    phase.inputs = dict(inputs)

    if kind == "closed":
        phase.function = v.string(raw, "function", where)
        v.known_function(phase.function, function_names, where + "function")
        phase.threads = v.positive_int(raw, "threads", where)
        phase.requests = v.positive_int(raw, "requests", where)
    elif kind == "open":
        phase.rate = v.positive_number(raw, "rate", where)
        phase.duration = v.positive_number(raw, "duration", where)
        mix = raw.get("mix")
        if not isinstance(mix, dict) or not mix:
            v.fail(where + "mix", "must be a table of function name = weight")
        for fn, weight in mix.items():
            v.known_function(fn, function_names, where + "mix." + fn)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                v.fail(where + "mix." + fn, "must be a positive number")
        phase.mix = dict(mix)
        phase.senders = v.positive_int(raw, "senders", where, default=DEFAULT_SENDERS)
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            v.fail(where + "seed", "must be an integer")
        phase.seed = seed
    else:
        phase.file = v.existing_file(raw, "file", where)
        phase.format = v.string(raw, "format", where, default="azure2021")
        if phase.format not in TRACE_FORMATS:
            v.fail(where + "format", "must be one of %s" % ", ".join(TRACE_FORMATS))
        phase.speedup = v.positive_number(raw, "speedup", where, default=1.0)
        fns = raw.get("functions")
        if not isinstance(fns, list) or not fns or not all(isinstance(f, str) for f in fns):
            v.fail(where + "functions", "must be a non-empty list of function names")
        for j, fn in enumerate(fns):
            v.known_function(fn, function_names, "%sfunctions[%d]" % (where, j))
        phase.functions = list(fns)
        phase.senders = v.positive_int(raw, "senders", where, default=DEFAULT_SENDERS)
        phase.limit = v.positive_int(raw, "limit", where, default=None)
        flag = raw.get("input_from_duration", False)
        if not isinstance(flag, bool):
            v.fail(where + "input_from_duration", "must be true or false")
        phase.input_from_duration = flag
        phase.max_input_ms = v.positive_number(raw, "max_input_ms", where, default=1000.0)
    return phase


class _Validator:
    """Small typed getters that raise ScenarioError with the file and the field's path."""

    _MISSING = object()

    def __init__(self, path):
        self.path = path
        # Relative paths in a scenario are relative to the repository (scenarios/..), so the
        # same file works whatever directory `minifaas bench` is started from.
        self.roots = [os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(path))),
                      os.path.dirname(os.path.abspath(path))]

    def fail(self, field, message):
        raise ScenarioError("%s: %s %s" % (self.path, field, message))

    def known(self, raw, fields, where):
        for key in raw:
            if key not in fields:
                self.fail(where + key, "is not a known field (expected one of %s)" % ", ".join(sorted(fields)))

    def _get(self, raw, key, where, default):
        if key in raw:
            return raw[key]
        if default is self._MISSING:
            self.fail(where + key, "is required")
        return default

    def string(self, raw, key, where, default=_MISSING):
        value = self._get(raw, key, where, default)
        if not isinstance(value, str) or (not value and default is self._MISSING):
            self.fail(where + key, "must be a non-empty string")
        return value

    def positive_int(self, raw, key, where, default=_MISSING):
        value = self._get(raw, key, where, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(where + key, "must be a positive integer")
        return value

    def positive_number(self, raw, key, where, default=_MISSING):
        value = self._get(raw, key, where, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self.fail(where + key, "must be a positive number")
        return float(value)

    def table_list(self, raw, key):
        value = raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
            self.fail(key, "must be a non-empty list of tables ([[%s]])" % key)
        return value

    def known_function(self, name, function_names, field):
        if name not in function_names:
            self.fail(field, "names '%s', which is not in [[functions]]" % name)

    def existing_file(self, raw, key, where):
        value = self.string(raw, key, where)
        candidates = [value] if os.path.isabs(value) else [os.path.join(r, value) for r in self.roots]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        self.fail(where + key, "'%s' is not a file" % value)
