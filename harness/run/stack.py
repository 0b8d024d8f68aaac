"""Start and stop a real Mini FaaS stack (`minifaas up`) on private sockets and a free port.

Used by the scenario harness and by the tests, so both drive the platform exactly as a user
does: a separate process group, readiness by polling GET /health, shutdown TERM, wait, KILL.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from reference.ports import free_port

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack did not come up; the message carries what its processes printed."""


class Stack:
    """One `minifaas up` in its own process group, with its own functions tree and sockets.

    >>> with Stack(strategy="FIFO", workers=2) as stack:
    ...     urllib.request.urlopen(stack.url + "/health")
    """

    def __init__(self, strategy="RR", workers=4, functions_dir=None, extra_args=(), env=None,
                 ready_timeout=60.0, cwd=None):
        self._tmp = tempfile.TemporaryDirectory(prefix="minifaas-stack-")
        self.dir = self._tmp.name
        self.functions_dir = functions_dir or os.path.join(self.dir, "functions")
        self.lb_sock = os.path.join(self.dir, "lb.sock")
        self.server_sock = os.path.join(self.dir, "server.sock")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.strategy, self.workers = strategy, workers
        self.extra_args = list(extra_args)
        self.env = env
        # Where `python -m reference` starts: it imports `reference` from there before anything
        # on PYTHONPATH (None: the caller's own directory, as a user's shell would).
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.proc = None
        self._log = None

    def command(self):
        return [sys.executable, "-m", "reference", "up",
                "--strategy", self.strategy, "--workers", str(self.workers),
                "--port", str(self.port), "--functions", self.functions_dir,
                "--lb-sock", self.lb_sock, "--server-sock", self.server_sock] + self.extra_args

    def start(self):
        """Start the stack and wait until /health answers 200. On failure the stack cleans up
        after itself (processes and temporary directory) before StackError reaches the caller,
        so `with Stack(): ...` and every other caller leave nothing behind."""
        self._log = open(os.path.join(self.dir, "stack.log"), "w+b")
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.cwd, start_new_session=True)
        try:
            self.wait_ready(self.ready_timeout)
        except StackError:
            self.close()
            raise
        return self

    def output(self):
        """What the stack's processes printed so far (for error messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def health(self, timeout=2.0):
        """The /health answer as (status, body dict), or (None, reason) if nothing answered."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
        except (OSError, ValueError) as e:
            return None, str(e)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError("minifaas up exited with %s:\n%s" % (self.proc.returncode, self.output()))
            status, _ = self.health(timeout=1.0)
            if status == 200:
                return
            time.sleep(0.05)
        raise StackError("stack not ready after %.0fs:\n%s" % (timeout, self.output()))

    def stop(self, grace=10.0):
        """TERM `minifaas up`, which stops its components in order (gateway first); then TERM
        the whole process group, wait, and KILL what is left.

        `up` alone first: a TERM to the whole group reaches the workers before the server has
        begun to stop, so the server starts replacements, and its shutdown then waits its full
        grace (5 s) for those. A stack run stopped that way cost 5 s more per stack."""
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(grace)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            log.warning("stack pid %d did not stop on SIGTERM in %.0f s", self.proc.pid, grace)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                log.warning("stack pid %d did not stop on %s", self.proc.pid, sig.name)
        # Workers and their children share the group: make sure none outlives the stack.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None
        if self._log:
            self._log.close()

    def close(self):
        """Stop the stack and remove its directory; safe to call more than once."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
