"""The balancer process: a scheduling strategy (reference/scheduling/strategies.py) behind a UNIX socket.

The server registers its workers, submits jobs and reports them done; the balancer answers
with `assign` frames (the ops are in reference/wire/ops.py; docs/ARCHITECTURE.md). Worker and
job ids are the server's own, so each connection gets its own strategy instance: when a server
goes away its workers and the jobs it had queued go with it, and a server that reconnects
starts clean by registering again.
"""

import asyncio
import errno
import itertools
import logging
import os
import signal
import socket
import stat

import uvloop

from reference.scheduling import strategies
from reference.wire import framing, ops
from reference.wire.errors import BadRequest, FaasError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_IN_USE = 1       # another balancer answers on the socket, or the path is not ours to take
EXIT_BAD_ARGS = 2     # unknown strategy or malformed --weights, like argparse's usage errors


def parse_weights(text):
    """`--weights "1,1,2,2"` as a list of ints (None stays None); BadRequest if malformed."""
    if text is None or not text.strip():
        return None
    try:
        weights = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadRequest("--weights must be whole numbers separated by commas, e.g. 1,1,2,2, not %r"
                         % text) from None
    if any(w < 1 for w in weights):
        raise BadRequest("--weights must all be >= 1, not %r" % text)
    return weights


class Session(framing.SinkProtocol):
    """One connected server: its strategy (so its workers and queued jobs) and its connection.
    Its frames are read straight into a FrameSink and dispatched from the read callback; while
    the server does not read our answers (the transport's buffer is full), we stop reading."""

    def __init__(self, balancer, number, strategy):
        super().__init__()
        self.balancer = balancer
        self.number = number
        self.strategy = strategy
        self.writer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.writer = transport
        self.balancer.sessions[self.number] = self
        log.debug("connection %d opened", self.number)

    def frame(self, header, body):
        self.balancer.dispatch(self, header)

    def broken(self, exc):
        log.warning("connection %d: %s; closing it", self.number, exc)
        self.balancer.close_session(self)

    def ended(self, inside_frame):
        if inside_frame:
            log.warning("connection %d: connection closed inside a frame; closing it", self.number)

    def connection_lost(self, exc):
        if exc is not None:
            log.warning("connection %d lost: %s", self.number, exc)
        self.balancer.close_session(self)

    def pause_writing(self):
        self.writer.pause_reading()

    def resume_writing(self):
        self.writer.resume_reading()

    def send(self, header):
        self.writer.write(framing.encode(header))

    def send_assignments(self, assignments):
        if assignments:
            # One write for the whole batch: frames are self-delimiting.
            self.writer.write(b"".join(
                framing.encode(ops.assign(job, worker))
                for job, worker in assignments))


class Balancer:
    """Accepts server connections and answers each message with its strategy's decisions.

    Handlers are `op_<name>(session, header)`, found by name like gunicorn's signal handlers;
    they never block, so a reply is written as soon as the strategy decides.
    """

    def __init__(self, strategy_name, weights, path):
        self.strategy_name = strategy_name
        self.weights = weights
        self.path = path
        self.sessions = {}
        self._numbers = itertools.count(1)

    def new_strategy(self):
        return strategies.create(self.strategy_name, self.weights)

    # -- connections ---------------------------------------------------------------------

    def new_session(self):
        return Session(self, next(self._numbers), self.new_strategy())

    def close_session(self, session):
        if self.sessions.pop(session.number, None) is None:
            return
        workers = session.strategy.workers()
        if workers:
            log.info("connection %d closed: forgetting workers %s and %d queued jobs",
                     session.number, workers, session.strategy.queue_length())
        session.writer.close()

    def dispatch(self, session, header):
        op = header.get("op")
        handler = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
        if handler is None:
            log.warning("connection %d: unknown op %r, ignored", session.number, op)
            return
        try:
            handler(session, header)
        except (KeyError, TypeError, ValueError, FaasError) as exc:
            # A message with missing or wrong fields is the sender's bug: say so, carry on.
            log.warning("connection %d: bad %r message %r ignored (%s: %s)",
                        session.number, op, header, type(exc).__name__, exc)

    # -- messages ------------------------------------------------------------------------

    def op_register(self, session, header):
        assignments, added = [], []
        for worker in header["workers"]:
            worker_id = worker["id"] if isinstance(worker, dict) else worker
            weight = worker.get("weight") if isinstance(worker, dict) else None
            assignments += session.strategy.add_worker(worker_id, weight)
            added.append(worker_id)
        log.info("connection %d registered workers %s (now %s)",
                 session.number, added, session.strategy.workers())
        session.send_assignments(assignments)

    def op_unregister(self, session, header):
        for worker_id in header["workers"]:
            lost = session.strategy.remove_worker(worker_id)
            if lost:
                log.debug("worker %s left with jobs %s outstanding", worker_id, lost)
        log.info("connection %d unregistered workers %s (now %s)",
                 session.number, header["workers"], session.strategy.workers())

    def op_submit(self, session, header):
        job = header["job"]
        if not session.strategy.workers():
            session.send(ops.reject(job, "no worker available"))
            return
        worker = session.strategy.submit(job, header.get("fn"))
        if worker is not None:
            session.send_assignments([(job, worker)])

    def op_done(self, session, header):
        session.send_assignments(session.strategy.done(header["worker"], header["job"]))

    def op_stats(self, session, header):
        strategy = session.strategy
        session.send(ops.balancer_stats(
            header.get("req"), strategy.name, strategy.queue_length(),
            [{"id": w, "outstanding": strategy.outstanding(w), "weight": strategy.weight(w)}
             for w in strategy.workers()]))

    # -- life cycle ----------------------------------------------------------------------

    async def run(self):
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        sock = listen_unix(self.path)
        inode = os.stat(self.path).st_ino
        server = await loop.create_unix_server(self.new_session, sock=sock)
        log.info("balancer ready: strategy %s%s, socket %s", self.strategy_name,
                 " weights %s" % self.weights if self.weights else "", self.path)
        try:
            await stopping.wait()
        finally:
            log.info("balancer stopping")
            server.close()
            for session in list(self.sessions.values()):
                self.close_session(session)
            await server.wait_closed()
            remove_socket(self.path, inode)
        return EXIT_OK


def listen_unix(path):
    """A listening UNIX socket at path, mode 0600 from the start (the umask covers the window
    between bind and chmod in which another user could connect)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def claim_socket_path(path):
    """Make path free for a new socket: remove a stale one left by a dead balancer. Returns an
    error message instead if a live balancer answers there or the path is something else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "%s exists and is not a socket; refusing to replace it" % path
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale socket %s", path)
        os.unlink(path)
        return None
    except OSError as exc:
        return "cannot check %s: %s" % (path, exc.strerror or exc)
    finally:
        probe.close()
    return "another balancer is already listening on %s; stop it or use --lb-sock" % path


def remove_socket(path, inode):
    """Remove our socket file, unless another process has replaced it since."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("could not remove %s: %s", path, exc)


def serve(settings):
    """`minifaas balancer`: run until SIGTERM or SIGINT; returns the process exit code. The
    strategy and weights were checked when the settings were made (reference/cli.py)."""
    path = settings.lb_sock
    problem = claim_socket_path(path)
    if problem:
        log.error("%s", problem)
        return EXIT_IN_USE
    balancer = Balancer(settings.strategy, list(settings.weights) if settings.weights else None, path)
    try:
        # uvloop: the balancer's loop in C. Not in the server, which forks workers: libuv's
        # at-fork handler closes fd numbers in children that the worker has since reused.
        return uvloop.run(balancer.run())
    except OSError as exc:
        log.error("cannot listen on %s: %s", path, exc.strerror or exc)
        return EXIT_IN_USE
