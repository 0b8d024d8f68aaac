"""The child side of a local worker, as gunicorn's workers/base.py is to its arbiter.

The worker's contract (`worker_main`): it runs in a child made by `os.fork()` from the server
(reference/executors/local.py), before which nothing of wasmtime has run; it makes its
runtimes and says so with one `booted` frame on its result pipe (or `boot_error` with the
reason, then exits WORKER_BOOT_ERROR); then it reads one Job frame at a time from its job pipe,
answers exactly one Outcome frame on its result pipe, and exits when the job pipe closes (the
server is gone). It never answers out of order, so the server knows which job it holds. Exit
codes: 0 at the end of the job pipe, WORKER_BOOT_ERROR when its runtimes could not be made (the
pool then stops respawning: a restart would fail the same way).
"""

import logging
import os
import signal

from reference.wire import framing, ops
from reference.wire.jobs import Job, Outcome

log = logging.getLogger(__name__)

WORKER_BOOT_ERROR = 3


def worker_main(job_fd, result_fd):
    """The loop a forked worker runs until its job pipe closes. Never returns normally."""
    signal.set_wakeup_fd(-1)  # the server loop's wake-up pipe is not ours
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        from reference.worker.runtimes import (
            WorkerRuntimes,  # after the fork: wasmtime starts here
        )

        runtimes = WorkerRuntimes()
    except Exception as exc:
        log.exception("worker %d could not start its runtimes", os.getpid())
        _say(result_fd, ops.boot_error("%s: %s" % (type(exc).__name__, exc)))
        os._exit(WORKER_BOOT_ERROR)
    _say(result_fd, ops.booted())
    frames = framing.FrameReader(job_fd)
    try:
        while True:
            try:
                header, body = frames.read_frame()
            except EOFError:
                break
            job = Job.from_wire(header, body)
            try:
                outcome = runtimes.run(job)
            except Exception as exc:  # a bug in a runtime must not take the worker down silently
                log.exception("runtime failed on job %s", job.job_id)
                outcome = Outcome(exit_code=-1, error="runtime", message="runtime failure: %s" % exc)
            framing.write_frame(result_fd, *outcome_frame(job.job_id, outcome))
    finally:
        runtimes.close()
    os._exit(0)


def outcome_frame(job_id, outcome):
    """The frame that answers job `job_id`: Outcome.to_wire's, with the job's id. The server
    passes it on to the gateway as it is (reference/executors/local.py's Answer)."""
    header, body = outcome.to_wire()
    header["job_id"] = job_id
    return header, body


def _say(result_fd, header):
    """Tell the server how the boot went; if it is gone already, the exit says the rest."""
    try:
        framing.write_frame(result_fd, header)
    except OSError:
        pass


def close_inherited_fds(keep):
    """Close every descriptor but stdio and `keep`: a worker holding another worker's pipe
    end would hide that worker's death (no EOF) and keep the server's sockets alive."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
