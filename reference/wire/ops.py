"""The protocol's ops: the header of every frame the platform's processes send each other that
is not a Job or an Outcome, built here so that both sides spell them alike.

    gateway -> server     invoke (+ the payload as body), stats, health; each with a `req`
                          the answer carries back (reference/gateway/client.py)
    server -> balancer    register, unregister, submit, done, stats
    balancer -> server    assign, reject, stats (the answer, with the request's `req`)
    worker -> server      booted once its runtimes are made, or boot_error before it exits
                          with WORKER_BOOT_ERROR; then one Outcome frame per Job frame

Receivers dispatch on `op` by name (`op_<name>` methods: reference/scheduling/balancer.py,
reference/server/server.py, reference/server/balancer_link.py).
"""

# gateway -> server
INVOKE = "invoke"
HEALTH = "health"
STATS = "stats"          # also server -> balancer, and the balancer's answer
# server -> balancer
REGISTER = "register"
UNREGISTER = "unregister"
SUBMIT = "submit"
DONE = "done"
# balancer -> server
ASSIGN = "assign"
REJECT = "reject"
# worker -> server, before its first Outcome
BOOTED = "booted"
BOOT_ERROR = "boot_error"


# -- gateway -> server ------------------------------------------------------------------------

def invoke(fn_id, fn_dir, lang, timeout_ms, memory_mb, output_limit):
    """An invocation: the Job's fields but its id (the server numbers jobs) and its input (the
    frame's body)."""
    return {"op": INVOKE, "fn_id": fn_id, "fn_dir": fn_dir, "lang": lang, "timeout_ms": timeout_ms,
            "memory_mb": memory_mb, "output_limit": output_limit}


def health():
    return {"op": HEALTH}


def stats(req=None):
    """Ask for statistics: the gateway asks the server, the server asks the balancer."""
    header = {"op": STATS}
    if req is not None:
        header["req"] = req
    return header


# -- server -> balancer -----------------------------------------------------------------------

def register(worker_ids):
    return {"op": REGISTER, "workers": [{"id": wid} for wid in worker_ids]}


def unregister(worker_ids):
    return {"op": UNREGISTER, "workers": list(worker_ids)}


def submit(job_id, fn_id):
    return {"op": SUBMIT, "job": job_id, "fn": fn_id}


def done(job_id, worker_id):
    return {"op": DONE, "job": job_id, "worker": worker_id}


# -- balancer -> server -----------------------------------------------------------------------

def assign(job_id, worker_id):
    return {"op": ASSIGN, "job": job_id, "worker": worker_id}


def reject(job_id, message, error="unavailable"):
    return {"op": REJECT, "job": job_id, "error": error, "message": message}


def balancer_stats(req, strategy, queue, workers):
    """The balancer's answer to `stats`: its strategy, its queue length and its workers
    (dicts of id, outstanding, weight)."""
    return {"op": STATS, "req": req, "strategy": strategy, "queue": queue, "workers": workers}


# -- worker -> server -------------------------------------------------------------------------

def booted():
    return {"op": BOOTED}


def boot_error(message):
    return {"op": BOOT_ERROR, "message": message}
