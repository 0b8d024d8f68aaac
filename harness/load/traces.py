"""Invocation traces: read a trace file into a time-ordered schedule the runner can replay.

Format `azure2021` (Azure Functions 2021 trace, as sampled by vHive's InVitro):
`app,func,end_timestamp,duration` in seconds, one row per invocation; start = end - duration.

Format `azure2019` (Azure Functions 2019 trace, Shahrad et al., ATC'20): per-minute invocation
counts per function, in the dataset's own layout (`HashOwner,HashApp,HashFunction,Trigger,1..1440`)
or InVitro's sampled one (`HashFunction,HashOwner,HashApp,minute_1..`), and beside it a durations
file (`HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0..100`,
in ms). The trace says how many calls each minute had, not when: `spread` places them in the
minute, and each call's duration is drawn from its function's percentiles.
"""

import bisect
import csv
import dataclasses
import hashlib
import logging
import os
import random
import re

log = logging.getLogger(__name__)

FORMATS = ("azure2021", "azure2019")
ARRIVALS = ("poisson", "uniform", "equidistant")
MINUTE_COLUMN = re.compile(r"^(?:minute_)?(\d+)$")
PERCENTILE_COLUMN = re.compile(r"^percentile_Average_(\d+)$")
KEY_COLUMNS = ("HashOwner", "HashApp", "HashFunction")


@dataclasses.dataclass(frozen=True, order=True)
class Invocation:
    at: float          # seconds from the first start, in trace time
    func: str          # the trace's function identity (app/func; owner/app/function for azure2019)
    duration: float    # seconds the invocation ran in the trace


def read(path, fmt="azure2021", **options):
    """The trace's invocations sorted by start time. `options` are those of `read_azure2019`."""
    if fmt == "azure2021":
        if options:
            raise ValueError("format azure2021 takes no options (got %s)" % ", ".join(sorted(options)))
        return read_azure2021(path)
    if fmt == "azure2019":
        return read_azure2019(path, **options)
    raise ValueError("unknown trace format %r (known: %s)" % (fmt, ", ".join(FORMATS)))


def read_azure2021(path):
    """The trace's invocations sorted by start time, `at` counted from the earliest start."""
    rows = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                end, duration = float(row["end_timestamp"]), float(row["duration"])
                func = "%s/%s" % (row["app"], row["func"])
            except (KeyError, TypeError, ValueError):
                raise ValueError("%s:%d: expected app,func,end_timestamp,duration" % (path, line)) from None
            rows.append((end - duration, func, duration))
    if not rows:
        return []
    first = min(start for start, _, _ in rows)
    return sorted(Invocation(at=start - first, func=func, duration=duration) for start, func, duration in rows)


# -- azure2019 -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Durations:
    """One function's run times in ms: the percentile points of the trace, and its extremes."""
    points: tuple      # ((percent, ms), ...) sorted by percent
    minimum: float = None
    maximum: float = None

    def draw(self, rng):
        """A duration in ms, by inverting the percentile curve (linear between its points)."""
        u = rng.random() * 100.0
        percents = [p for p, _ in self.points]
        i = bisect.bisect_right(percents, u)
        if i == 0:
            ms = self.points[0][1]
        elif i == len(self.points):
            ms = self.points[-1][1]
        else:
            (p0, v0), (p1, v1) = self.points[i - 1], self.points[i]
            ms = v0 + (v1 - v0) * (u - p0) / (p1 - p0) if p1 > p0 else v1
        # The percentiles are of per-period averages; one call can only lie within the extremes.
        if self.minimum is not None:
            ms = max(ms, self.minimum)
        if self.maximum is not None:
            ms = min(ms, self.maximum)
        return ms


def durations_path(path):
    """The durations file beside a counts file, named as InVitro or the Azure dataset name it."""
    directory, name = os.path.split(path)
    if "invocations_per_function" in name:
        name = name.replace("invocations_per_function", "function_durations_percentiles")
        # Azure's counts files carry the trigger kind ("_md"); the durations files do not.
        name = name.replace("function_durations_percentiles_md", "function_durations_percentiles")
    elif "inv" in name:
        name = name.replace("inv", "run")
    else:
        raise ValueError("%s: cannot tell where its durations file is; name it with `durations`" % path)
    return os.path.join(directory, name)


def function_key(row):
    return "/".join(row[k] for k in KEY_COLUMNS)


def short_name(func):
    """A readable label for a trace function: its last component, cut to 12 characters."""
    return func.rsplit("/", 1)[-1][:12]


def read_durations(path):
    """{owner/app/function: Durations} from a durations file (ms)."""
    out = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        percent_columns = sorted(((int(m.group(1)), c) for c in header
                                  for m in [PERCENTILE_COLUMN.match(c)] if m))
        if not percent_columns or not all(k in header for k in KEY_COLUMNS):
            raise ValueError("%s: expected %s,percentile_Average_0..100 columns"
                             % (path, ",".join(KEY_COLUMNS)))
        for line, row in enumerate(reader, start=2):
            try:
                points = tuple((p, float(row[c])) for p, c in percent_columns)
                minimum = float(row["Minimum"]) if row.get("Minimum") not in (None, "") else None
                maximum = float(row["Maximum"]) if row.get("Maximum") not in (None, "") else None
            except (TypeError, ValueError):
                raise ValueError("%s:%d: a duration is not a number" % (path, line)) from None
            out[function_key(row)] = Durations(points, minimum, maximum)
    return out


def read_counts(path):
    """({owner/app/function: {minute: count}} with minutes numbered as the columns, 1..), the
    sorted minute numbers) from a counts file in either layout; zero counts are left out."""
    counts = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        minutes = [(int(m.group(1)), c) for c in header for m in [MINUTE_COLUMN.match(c)] if m]
        if not minutes or not all(k in header for k in KEY_COLUMNS):
            raise ValueError("%s: expected %s and per-minute columns 1.. (or minute_1..)"
                             % (path, ",".join(KEY_COLUMNS)))
        for line, row in enumerate(reader, start=2):
            try:
                per_minute = {m: int(row[c] or 0) for m, c in minutes}
            except (TypeError, ValueError):
                raise ValueError("%s:%d: a per-minute count is not a whole number" % (path, line)) from None
            if any(n < 0 for n in per_minute.values()):
                raise ValueError("%s:%d: a per-minute count is negative" % (path, line))
            key = function_key(row)
            mine = counts.setdefault(key, {})
            for m, n in per_minute.items():
                if n:
                    mine[m] = mine.get(m, 0) + n
    return counts, sorted(m for m, _ in minutes)


def spread(count, rng, arrivals="poisson", length=60.0):
    """`count` arrival offsets in [0, length), sorted.

    poisson: a Poisson process that had `count` arrivals in the minute, i.e. `count` independent
    uniform times (its exponential gaps, conditioned on the count); uniform: gaps drawn uniformly
    and scaled to the minute, less bursty than Poisson (InVitro's "uniform" IAT); equidistant:
    evenly spaced, each in the middle of its 1/count of the minute.
    """
    if count <= 0:
        return []
    if arrivals == "poisson":
        return sorted(rng.random() * length for _ in range(count))
    if arrivals == "uniform":
        gaps = [rng.random() for _ in range(count + 1)]
        scale = length / sum(gaps) if sum(gaps) > 0 else 0.0
        out, t = [], 0.0
        for g in gaps[:-1]:
            t += g * scale
            out.append(min(t, length * (1 - 1e-12)))
        return out
    if arrivals == "equidistant":
        return [(i + 0.5) * length / count for i in range(count)]
    raise ValueError("unknown arrivals %r (known: %s)" % (arrivals, ", ".join(ARRIVALS)))


def read_azure2019(path, durations=None, minutes=None, functions_sample=None, arrivals="poisson", seed=0):
    """The invocations of a per-minute counts file, sorted by time, `at` counted from the start
    of the window's first minute.

    `durations`: the durations file (default: `durations_path(path)`); functions it lacks are
    left out (and logged). `minutes = [start, end]`: only trace minutes start..end, both
    included, numbered as the file's columns (1..1440). `functions_sample = N`: N functions
    chosen at random (seeded) among those with durations. `arrivals`: see `spread`.

    Every minute of every function draws from a generator of its own, seeded by (seed, function,
    minute): a window or a sample only leaves calls out, it never moves the others.
    """
    if arrivals not in ARRIVALS:
        raise ValueError("unknown arrivals %r (known: %s)" % (arrivals, ", ".join(ARRIVALS)))
    counts, columns = read_counts(path)
    runs = read_durations(durations or durations_path(path))
    missing = sorted(set(counts) - set(runs))
    if missing:
        log.warning("%s: %d function(s) have no durations in the durations file and are left out",
                    path, len(missing))
    functions = sorted(set(counts) & set(runs))
    if functions_sample is not None:
        if functions_sample < 1:
            raise ValueError("functions_sample must be at least 1")
        if functions_sample < len(functions):
            functions = sorted(random.Random("%s/sample" % seed).sample(functions, functions_sample))
    if minutes is None:
        first, last = (columns[0], columns[-1]) if columns else (1, 0)
    else:
        first, last = minutes
        if first < 1 or last < first:
            raise ValueError("minutes must be [start, end] with 1 <= start <= end, not %r" % (list(minutes),))
    out = []
    for func in functions:
        for minute, n in counts[func].items():
            if not first <= minute <= last:
                continue
            rng = random.Random("%s/%s/%d" % (seed, func, minute))
            base = (minute - first) * 60.0
            for offset in spread(n, rng, arrivals):
                out.append(Invocation(at=base + offset, func=func, duration=runs[func].draw(rng) / 1000.0))
    out.sort()
    return out


# -- replay --------------------------------------------------------------------------------

def map_function(trace_func, names):
    """The scenario function standing for a trace function: stable by hash, whatever the run."""
    digest = hashlib.sha256(trace_func.encode()).digest()
    return names[int.from_bytes(digest[:8], "big") % len(names)]


def schedule(invocations, names, speedup=1.0, limit=None):
    """(wall-clock offset s, function name, trace duration s) for each invocation, time-compressed."""
    chosen = invocations[:limit] if limit else invocations
    return [(inv.at / speedup, map_function(inv.func, names), inv.duration) for inv in chosen]


def phase_invocations(phase):
    """The invocations a trace phase replays (its file, format and azure2019 options)."""
    options = {}
    if phase.format == "azure2019":
        options = {"durations": phase.durations, "minutes": phase.minutes,
                   "functions_sample": phase.functions_sample, "arrivals": phase.arrivals,
                   "seed": phase.seed}
    return read(phase.file, phase.format, **options)


def duration_input_ms(duration, speedup, cap_ms):
    """The input a trace call sends with `input_from_duration`: its run time in whole ms,
    compressed like the clock, at most `cap_ms`, at least 1 (spin.c spins 20 ms for 0)."""
    return max(1, round(min(duration * 1000.0 / speedup, cap_ms)))
