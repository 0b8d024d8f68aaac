"""Every runtime of one worker, by language: wasm (C, Rust, Go), node, python3 and php in the
sandbox (warm by default), and static HTML. `WorkerRuntimes` is made after the fork."""

import ctypes
import logging
import os
import time

from reference.wire.jobs import Outcome
from reference.worker.capture import Capture
from reference.worker.capture import ms as _ms
from reference.worker.sandbox import scratch as scratch_dirs
from reference.worker.sandbox.process import NodeRuntime, PhpRuntime, PythonRuntime
from reference.worker.warm.reuse import RESIDENT_RUNTIMES
from reference.worker.warm.runtimes import WARM_RUNTIMES
from reference.worker.wasm.runtime import WasmRuntime

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


class HtmlRuntime:
    """A static page: the stored code is the output."""

    def __init__(self, scratch):
        pass

    def run(self, job):
        stdout = Capture(job.output_limit)
        with open(os.path.join(job.fn_dir, "code.html"), "rb") as f:
            stdout.write(f.read())
        return Outcome(stdout=stdout.value(), truncated=stdout.truncated)

    def close(self):
        pass


RUNTIMES = {"wasm": WasmRuntime, "node": NodeRuntime, "python": PythonRuntime, "php": PhpRuntime, "html": HtmlRuntime}
RUNTIME_OF = {"c": "wasm", "rust": "wasm", "go": "wasm", "js": "node", "python": "python", "php": "php", "html": "html"}


def _become_subreaper():
    # Descendants that escape the function's process group are re-parented to us, not to init,
    # so they can be found and killed after the call.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper: %s", exc)


class WorkerRuntimes:
    """Every runtime of one worker, made lazily. Create it after the fork; `run` never raises
    for the function's fault, `close` releases the engine and stops the warm interpreters.
    warm=False starts a fresh interpreter per call (the simple path, kept to compare with); by
    default it is FAAS_WARM=0 in the environment, so a whole stack can be measured both ways."""

    def __init__(self, warm=None):
        if warm is None:
            warm = os.environ.get("FAAS_WARM", "1") != "0"
        _become_subreaper()
        self.scratch = scratch_dirs.root()
        scratch_dirs.sweep(self.scratch)
        self.runtimes = {}
        self.seen = set()
        self.classes = dict(RUNTIMES)
        if warm:
            self.classes.update(WARM_RUNTIMES)

    def runtime(self, lang):
        name = RUNTIME_OF[lang]
        if name not in self.runtimes:
            self.runtimes[name] = self.classes[name](self.scratch)
        return self.runtimes[name]

    def resident_runtime(self, lang):
        """The runtime of functions deployed with reuse=true (whatever FAAS_WARM says: a
        function's own choice), or None for a language where it means nothing."""
        if lang not in RESIDENT_RUNTIMES:
            return None
        key = "reuse-" + lang
        if key not in self.runtimes:
            self.runtimes[key] = RESIDENT_RUNTIMES[lang](self.scratch)
        return self.runtimes[key]

    def run(self, job):
        cold = job.fn_id not in self.seen
        started = time.perf_counter()
        try:
            runtime = (job.reuse and self.resident_runtime(job.lang)) or self.runtime(job.lang)
            # A language's first call in this worker also starts its runtime (importing wasmtime
            # and building its engine: about 50 ms): that is part of this call's cold start.
            setup_ms = _ms(started)
            out = runtime.run(job)
            # To the microsecond, as queue_ms and the answer's headers: more digits are timer
            # noise, and every one is a float repr the gateway pays for in each answer.
            out.init_ms = round((out.init_ms or 0.0) + setup_ms, 3)
            if out.exec_ms is not None:
                out.exec_ms = round(out.exec_ms, 3)
        except Exception as exc:  # a broken function directory must not take the worker down
            log.exception("job %s (%s) failed in the runtime", job.job_id, job.fn_id)
            out = Outcome(exit_code=1, error="runtime", message="the function could not run: %s" % exc)
        else:
            self.seen.add(job.fn_id)
        # A warm runtime also says cold when it had to start an interpreter (after a recycle).
        out.cold = cold or out.cold
        return out

    def close(self):
        for runtime in self.runtimes.values():
            runtime.close()
        self.runtimes.clear()
