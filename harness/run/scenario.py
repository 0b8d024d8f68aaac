"""Scenario files (TOML): parse and validate them fully before any stack starts.

Every error names the file and the field, e.g. "scenarios/x.toml: phases[1].rate must be a
positive number", so a typo costs seconds rather than a half-finished run.
"""

import dataclasses
import os
import re
import tomllib

from harness.load import traces
from reference.scheduling.strategies import STRATEGIES

STRATEGY_NAMES = list(STRATEGIES)   # a scenario's strategies are checked before any stack starts

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
KINDS = ("closed", "open", "trace", "sweep")
TRACE_FORMATS = ("azure2021", "azure2019")
ARRIVALS = traces.ARRIVALS
COUNTS = ("all", "warm", "cold")   # which calls a phase's figures count

# How a stack is started, beyond the strategy: allowed at the top level (every stack) and in each
# [[stacks]] entry (that variant only, over the top level's values).
STACK_FIELDS = {"workers", "min_workers", "max_workers", "scale_cooldown", "weights", "executor", "hosts"}
TOP_FIELDS = {"name", "description", "strategies", "repeat", "functions", "phases", "stacks"} | STACK_FIELDS
EXECUTORS = ("local", "nats")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$")
FUNCTION_FIELDS = {"name", "lang", "source", "input", "timeout_ms", "memory_mb", "service_ms",
                   "max_concurrency", "max_queue", "reuse"}
COMMON_PHASE_FIELDS = {"name", "kind", "input", "inputs", "count"}
PHASE_FIELDS = {
    "closed": COMMON_PHASE_FIELDS | {"function", "threads", "requests"},
    "open": COMMON_PHASE_FIELDS | {"rate", "duration", "mix", "senders", "seed", "model"},
    "trace": COMMON_PHASE_FIELDS | {"file", "format", "speedup", "functions", "senders", "limit",
                                    "input_from_duration", "max_input_ms", "model",
                                    # azure2019 only
                                    "durations", "minutes", "functions_sample", "arrivals", "seed"},
    "sweep": COMMON_PHASE_FIELDS | {"mix", "rates", "step_duration", "warmup", "slo_p99_ms",
                                    "stop_when_saturated", "senders", "seed", "model"},
}
DEFAULT_SENDERS = 32
# A sweep goes past saturation, where hundreds of requests are outstanding at once: each needs
# a connection of its own, or it waits for one and the injector becomes the limit.
SWEEP_SENDERS = 512


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
    service_ms: float = None   # the model's service time when no run measured one (minifaas simulate)
    # Deploy settings, as the API takes them: to compare with and without, deploy the same source
    # twice under two names, one with the setting, and offer both in a phase's mix.
    max_concurrency: int = None    # calls of it running at once; more wait in the gateway, then 429
    max_queue: int = None          # calls waiting for their turn (0: none)
    reuse: bool = False            # js, python, php: one long-lived interpreter per worker


@dataclasses.dataclass
class StackSpec:
    """One way to start the stack: `minifaas up` options besides the strategy.

    `label` is "" for a scenario without [[stacks]]; otherwise results are keyed STRATEGY@label.
    """
    label: str = ""
    workers: int = 4
    min_workers: int = None
    max_workers: int = None
    scale_cooldown: float = None
    weights: list = None
    executor: str = "local"
    hosts: int = 1          # executor "nats": worker hosts, each with `workers` workers

    def key(self, strategy):
        return "%s@%s" % (strategy, self.label) if self.label else strategy

    def autoscaling(self):
        return self.min_workers is not None or self.max_workers is not None

    def extra_args(self):
        """`minifaas up` arguments for these options (the NATS URL is added once a cluster runs)."""
        args = []
        for flag, value in (("--min-workers", self.min_workers), ("--max-workers", self.max_workers),
                            ("--scale-cooldown", self.scale_cooldown)):
            if value is not None:
                args += [flag, "%g" % value]
        if self.weights:
            args += ["--weights", ",".join(str(w) for w in self.weights)]
        return args

    def describe(self):
        """What the result file records about this stack."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and not (k == "hosts" and self.executor == "local")}


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
    # sweep
    rates: list = None
    step_duration: float = None
    warmup: float = 0.0
    slo_p99_ms: float = None
    stop_when_saturated: bool = True
    durations: str = None        # azure2019: the durations file (default: beside `file`)
    minutes: list = None         # azure2019: [start, end] trace minutes, both included
    functions_sample: int = None # azure2019: replay only this many trace functions (seeded)
    arrivals: str = "poisson"    # azure2019: how a minute's count is spread over the minute
    model: bool = False          # predict the phase with harness/analysis/model.py too
    count: str = "all"           # the calls the figures count: "all", "warm" or "cold"

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
    stacks: list = dataclasses.field(default_factory=lambda: [StackSpec()])

    def function(self, name):
        return next(f for f in self.functions if f.name == name)

    def runs(self, strategies=None):
        """(key, strategy, StackSpec) for every column compared, strategy by strategy."""
        return [(spec.key(s), s, spec) for s in (strategies or self.strategies) for spec in self.stacks]

    def schedule(self, strategies=None):
        """(repeat index, key, strategy, StackSpec) for every fresh stack, in a balanced order.

        Repeats alternate the columns forwards and backwards (A B, B A, A B: A B B A A B), so a
        drift of the machine's load over the run favours no column: each is as often early as late.
        """
        columns = self.runs(strategies)
        order = []
        for i in range(self.repeat):
            order += [(i, *c) for c in (columns if i % 2 == 0 else columns[::-1])]
        return order


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
    top = _stack(v, raw, "", StackSpec())
    workers = top.workers
    repeat = v.positive_int(raw, "repeat", "", default=1)
    strategies = raw.get("strategies", ["RR", "FIFO"])
    if (not isinstance(strategies, list) or not strategies
            or not all(isinstance(s, str) and s for s in strategies)):
        v.fail("strategies", "must be a non-empty list of strategy names")
    if len(set(strategies)) != len(strategies):
        v.fail("strategies", "names a strategy twice")
    for i, strategy in enumerate(strategies):
        if strategy.upper() not in STRATEGY_NAMES:
            v.fail("strategies[%d]" % i, "unknown strategy %r: choose one of %s" % (strategy, ", ".join(STRATEGY_NAMES)))

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
    stacks = [top]
    if "stacks" in raw:
        stacks = [_variant(v, t, i, top) for i, t in enumerate(v.table_list(raw, "stacks"))]
        labels = [s.label for s in stacks]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                v.fail("stacks[%d].label" % i, "'%s' is used by two stacks" % label)
    return Scenario(path=path, name=name, description=description, workers=workers,
                    strategies=list(strategies), repeat=repeat, functions=functions,
                    phases=phases, raw=raw, stacks=stacks)


def _variant(v, raw, i, top):
    where = "stacks[%d]." % i
    v.known(raw, STACK_FIELDS | {"label"}, where)
    label = v.string(raw, "label", where)
    if not LABEL_RE.match(label):
        v.fail(where + "label", "must be up to 32 letters, digits, '_', '.', ':' or '-'")
    return _stack(v, raw, where, dataclasses.replace(top, label=label))


def _stack(v, raw, where, base):
    """The stack options set in `raw` over those of `base`, checked together."""
    spec = dataclasses.replace(base)
    spec.workers = v.positive_int(raw, "workers", where, default=base.workers)
    spec.min_workers = v.positive_int(raw, "min_workers", where, default=base.min_workers)
    spec.max_workers = v.positive_int(raw, "max_workers", where, default=base.max_workers)
    if "scale_cooldown" in raw:
        spec.scale_cooldown = v.positive_number(raw, "scale_cooldown", where)
    if "weights" in raw:
        weights = raw["weights"]
        if (not isinstance(weights, list) or not weights
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in weights)):
            v.fail(where + "weights", "must be a non-empty list of whole numbers >= 1, e.g. [1, 1, 2, 2]")
        spec.weights = list(weights)
    spec.executor = v.string(raw, "executor", where, default=base.executor)
    if spec.executor not in EXECUTORS:
        v.fail(where + "executor", "must be one of %s" % ", ".join(EXECUTORS))
    spec.hosts = v.positive_int(raw, "hosts", where, default=base.hosts)
    if "hosts" in raw and spec.executor != "nats":
        v.fail(where + "hosts", "needs executor = \"nats\" (worker hosts are NATS clients)")
    if spec.autoscaling() or spec.scale_cooldown is not None:
        if spec.executor != "local":
            v.fail(where + "executor", "auto-scaling (min_workers, max_workers, scale_cooldown) "
                                       "needs executor = \"local\"")
        low = spec.min_workers or 1
        high = spec.max_workers or max(spec.workers, low)
        if low > high:
            v.fail(where + "min_workers", "must not exceed max_workers (%d > %d)" % (low, high))
    return spec


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
                    memory_mb=v.positive_int(raw, "memory_mb", where, default=None),
                    service_ms=(v.positive_number(raw, "service_ms", where) if "service_ms" in raw else None),
                    max_concurrency=v.positive_int(raw, "max_concurrency", where, default=None),
                    max_queue=v.non_negative_int(raw, "max_queue", where, default=None),
                    reuse=v.boolean(raw, "reuse", where, default=False))


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
    phase.count = v.string(raw, "count", where, default="all")
    if phase.count not in COUNTS:
        v.fail(where + "count", "must be one of %s" % ", ".join(COUNTS))
    if "model" in raw:
        if not isinstance(raw["model"], bool):
            v.fail(where + "model", "must be true or false")
        phase.model = raw["model"]

    if kind == "closed":
        phase.function = v.string(raw, "function", where)
        v.known_function(phase.function, function_names, where + "function")
        phase.threads = v.positive_int(raw, "threads", where)
        phase.requests = v.positive_int(raw, "requests", where)
    elif kind in ("open", "sweep"):
        if kind == "open":
            phase.rate = v.positive_number(raw, "rate", where)
            phase.duration = v.positive_number(raw, "duration", where)
        else:
            _sweep(v, raw, where, phase)
        mix = raw.get("mix")
        if not isinstance(mix, dict) or not mix:
            v.fail(where + "mix", "must be a table of function name = weight")
        for fn, weight in mix.items():
            v.known_function(fn, function_names, where + "mix." + fn)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                v.fail(where + "mix." + fn, "must be a positive number")
        phase.mix = dict(mix)
        phase.senders = v.positive_int(raw, "senders", where,
                                       default=SWEEP_SENDERS if kind == "sweep" else DEFAULT_SENDERS)
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
        _azure2019(v, raw, where, phase)
    return phase


def _azure2019(v, raw, where, phase):
    """The options of an azure2019 trace phase; refused on another format."""
    options = ("durations", "minutes", "functions_sample", "arrivals", "seed")
    if phase.format != "azure2019":
        for key in options:
            if key in raw:
                v.fail(where + key, "is an option of format = \"azure2019\" only")
        return
    if "durations" in raw:
        phase.durations = v.existing_file(raw, "durations", where)
    else:
        try:
            phase.durations = traces.durations_path(phase.file)
        except ValueError as e:
            v.fail(where + "durations", "is needed: %s" % e)
        if not os.path.isfile(phase.durations):
            v.fail(where + "durations", "is needed: no %s beside the trace" % os.path.basename(phase.durations))
    if "minutes" in raw:
        minutes = raw["minutes"]
        if (not isinstance(minutes, list) or len(minutes) != 2
                or not all(isinstance(m, int) and not isinstance(m, bool) for m in minutes)
                or not 1 <= minutes[0] <= minutes[1]):
            v.fail(where + "minutes", "must be [start, end], whole trace minutes with 1 <= start <= end")
        phase.minutes = list(minutes)
    phase.functions_sample = v.positive_int(raw, "functions_sample", where, default=None)
    phase.arrivals = v.string(raw, "arrivals", where, default="poisson")
    if phase.arrivals not in ARRIVALS:
        v.fail(where + "arrivals", "must be one of %s" % ", ".join(ARRIVALS))
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        v.fail(where + "seed", "must be an integer")
    phase.seed = seed


def _sweep(v, raw, where, phase):
    """A sweep's steps: `rates` as a list of rising rates, or {start, factor, steps}."""
    rates = raw.get("rates")
    if isinstance(rates, dict):
        v.known(rates, {"start", "factor", "steps"}, where + "rates.")
        start = v.positive_number(rates, "start", where + "rates.")
        factor = v.positive_number(rates, "factor", where + "rates.")
        steps = v.positive_int(rates, "steps", where + "rates.")
        if factor <= 1.0:
            v.fail(where + "rates.factor", "must be over 1 (the rate rises step by step)")
        phase.rates = [start * factor ** i for i in range(steps)]
    elif (isinstance(rates, list) and rates
          and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates)):
        if any(b <= a for a, b in zip(rates, rates[1:])):
            v.fail(where + "rates", "must rise step by step, e.g. [20, 40, 80]")
        phase.rates = [float(r) for r in rates]
    else:
        v.fail(where + "rates", "must be a list of positive rates or a table {start, factor, steps}")
    phase.step_duration = v.positive_number(raw, "step_duration", where)
    warmup = raw.get("warmup", 0.0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < phase.step_duration:
        v.fail(where + "warmup", "must be a number of seconds, at least 0 and under step_duration")
    phase.warmup = float(warmup)
    phase.slo_p99_ms = v.positive_number(raw, "slo_p99_ms", where)
    flag = raw.get("stop_when_saturated", True)
    if not isinstance(flag, bool):
        v.fail(where + "stop_when_saturated", "must be true or false")
    phase.stop_when_saturated = flag


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

    def non_negative_int(self, raw, key, where, default=_MISSING):
        value = self._get(raw, key, where, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where + key, "must be an integer >= 0")
        return value

    def boolean(self, raw, key, where, default=_MISSING):
        value = self._get(raw, key, where, default)
        if not isinstance(value, bool):
            self.fail(where + key, "must be true or false")
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
