"""The machine around a run: load average and CPU steal before and after, so a report can say
when a comparison was taken on a machine that was busy with something else.

Steal (time the hypervisor gave another guest) and a high load average before a run both make a
strategy look slower than it is; the balanced run order spreads such drift over every column,
and these records show where it happened.
"""

import os
import time

# A run is flagged when the hypervisor stole more than this share of the CPU time during it...
STEAL_SHARE = 0.02
# ... or when, just before it began (its stack started and idle), something else kept this share
# of the machine's CPU busy. The load average cannot tell: the previous run's own load is in it
# for a minute after that run ended.
BUSY_SHARE = 0.25
IDLE_PROBE_S = 0.25    # 50 jiffies of 2 cores at 100 Hz: a 2 % resolution, and 0.25 s less a run


def snapshot():
    """{"loadavg": [1, 5, 15 min], "cpu": {"total", "steal"} jiffies since boot} (None where unknown)."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"loadavg": load, "cpu": _cpu_jiffies()}


def _cpu_jiffies():
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice: guest time is already
    # counted in user and nice, so it is left out of the total.
    return {"total": sum(values[:8]), "idle": values[3] + (values[4] if len(values) > 4 else 0),
            "steal": values[7] if len(values) > 7 else 0}


def before_run(probe_s=IDLE_PROBE_S):
    """A snapshot taken `probe_s` after another, with the machine's busy share over that time."""
    first = snapshot()
    time.sleep(probe_s)
    second = snapshot()
    second["busy_share"] = _share(first["cpu"], second["cpu"], lambda a, b: (b["total"] - b["idle"]) - (a["total"] - a["idle"]))
    return second


def _share(a, b, part):
    if not a or not b or b["total"] <= a["total"]:
        return None
    return part(a, b) / (b["total"] - a["total"])


def change(before, after):
    """What a run's host record holds: both snapshots' load, the steal share between, and flags."""
    record = {"loadavg_before": before.get("loadavg"), "loadavg_after": after.get("loadavg"),
              "busy_before": before.get("busy_share"),
              "steal_share": _share(before.get("cpu"), after.get("cpu"), lambda a, b: b["steal"] - a["steal"]),
              "flags": []}
    if record["steal_share"] is not None and record["steal_share"] > STEAL_SHARE:
        record["flags"].append("steal %.1f%% of the CPU time" % (100 * record["steal_share"]))
    if record["busy_before"] is not None and record["busy_before"] > BUSY_SHARE:
        record["flags"].append("the machine was %.0f%% busy just before the run" % (100 * record["busy_before"]))
    return record
