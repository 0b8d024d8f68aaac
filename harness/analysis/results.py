"""Result files: one versioned JSON document per scenario, with the run's metadata.

Reports and plots read only these files; `load` refuses a format version it does not know
rather than drawing a wrong picture from fields that changed meaning.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

# 2: sweeps (steps, capacity_rps), timelines in whole buckets of `dt` s (1 s in version 1),
# latency_ccdf and p99_ci95, each run's host and injector records, one fresh stack per repeat
# in scenario.order. Version 1 files are still read: their fields kept their meaning.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
RESULT_FILE = "result.json"


class ResultError(ValueError):
    """A result file that cannot be read by this version of the harness."""


def metadata():
    """Where and with what the run happened, so two result files can be compared fairly."""
    try:
        wasmtime = importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        wasmtime = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "wasmtime": wasmtime,
        "git_commit": git_commit(),
    }


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


def write(result, directory):
    """Write `result` as DIR/result.json (sorted keys, atomically) and return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RESULT_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load(path):
    """Read a result file; raise ResultError for an unknown format_version or a file that is not one."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        raise ResultError("%s: cannot read a result: %s" % (path, e)) from None
    version = result.get("format_version") if isinstance(result, dict) else None
    if version not in READABLE_VERSIONS:
        raise ResultError("%s: format_version %r is not supported (this harness reads versions %s); "
                          "rerun the scenario or use the harness that wrote it"
                          % (path, version, ", ".join(map(str, READABLE_VERSIONS))))
    return result


def load_each(paths):
    """(path, result) for each file that loads; the refusal of each one that does not goes to
    stderr. Returns (loaded, status): status 1 if any file was refused, for a command's exit."""
    loaded, status = [], 0
    for path in paths:
        try:
            loaded.append((path, load(path)))
        except ResultError as e:
            print(e, file=sys.stderr)
            status = 1
    return loaded, status
