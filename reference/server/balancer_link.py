"""The server's persistent connection to the balancer: reconnected whenever it drops, the
server's workers registered again after each (re)connect, and the balancer's frames dispatched
by name (`op_<name>`, as the balancer does with the server's).

The link reads the balancer's frames in the transport's callback (`LinkProtocol`), with no
stream or task in between. The link knows the protocol (reference/wire/ops.py), not the jobs: what an `assign` or a
`reject` means is the server's (`Scheduler` below).
"""

import asyncio
import itertools
import logging
from typing import Protocol

from reference.wire import framing, ops
from reference.wire.errors import FaasError, ProtocolError

log = logging.getLogger(__name__)

RETRY_S = 0.2


class Scheduler(Protocol):
    """What the link tells the server (reference/server/server.py)."""

    def balancer_up(self) -> None:
        """Connected (again): the balancer knows no worker of ours yet."""

    def assigned(self, job_id: int, worker_id: int) -> None:
        """The balancer chose `worker_id` for `job_id`."""

    def rejected(self, job_id: int, message: str) -> None:
        """The balancer cannot schedule `job_id` (no worker registered)."""

    def balancer_lost(self) -> None:
        """The connection dropped: whatever the balancer held is gone with it."""


class BalancerLink:
    def __init__(self, path, scheduler: Scheduler):
        self.path = path
        self.scheduler = scheduler
        self.writer = None
        self._stat_ids = itertools.count(1)
        self._stat_waiters = {}      # stats request id -> future of the balancer's answer

    @property
    def connected(self):
        return self.writer is not None

    def send(self, header):
        """Send one frame if connected; False if there is no balancer to send it to."""
        if self.writer is None:
            return False
        self.writer.write(framing.encode(header))
        return True

    async def stats(self, timeout_s):
        """The balancer's answer to `stats`, or None if it is not connected or does not answer
        in time."""
        if self.writer is None:
            return None
        req = next(self._stat_ids)
        waiter = self._stat_waiters[req] = asyncio.get_running_loop().create_future()
        self.send(ops.stats(req))
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self._stat_waiters.pop(req, None)

    async def run(self):
        """Connect, serve the connection until it drops, reconnect; until cancelled."""
        loop = asyncio.get_running_loop()
        announced = False
        while True:
            try:
                transport, protocol = await loop.create_unix_connection(lambda: LinkProtocol(self), self.path)
            except OSError as exc:
                if not announced:
                    log.info("waiting for the balancer at %s (%s)", self.path, exc.strerror or exc)
                    announced = True
                await asyncio.sleep(RETRY_S)
                continue
            announced = False
            if not await self._answers(transport, protocol):
                # A balancer on its way out can still take a connection (its listening socket
                # lives a moment after its death): not up until it answers, so wait and retry.
                transport.close()
                log.info("the balancer at %s took the connection and closed it", self.path)
                await asyncio.sleep(RETRY_S)
                continue
            log.info("connected to the balancer at %s", self.path)
            self.writer = transport
            try:
                self.scheduler.balancer_up()
                why = await protocol.lost
                log.warning("lost the balancer (%s)", why or "closed")
            finally:
                self.writer = None
                transport.close()
                for waiter in self._stat_waiters.values():
                    if not waiter.done():
                        waiter.set_result(None)
            # Jobs the balancer held are lost with it: the server answers them.
            self.scheduler.balancer_lost()

    async def _answers(self, transport, protocol):
        """True once the balancer at the end of a new connection answers a `stats`; False if
        the connection drops first."""
        req = next(self._stat_ids)
        waiter = self._stat_waiters[req] = asyncio.get_running_loop().create_future()
        try:
            transport.write(framing.encode(ops.stats(req)))
            await asyncio.wait((waiter, protocol.lost), return_when=asyncio.FIRST_COMPLETED)
            return waiter.done() and waiter.result() is not None
        except BaseException:
            transport.close()
            raise
        finally:
            self._stat_waiters.pop(req, None)

    def dispatch(self, header):
        op = header.get("op")
        handler = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
        if handler is None:
            log.warning("unknown message from the balancer: %r", op)
            return
        try:
            handler(header)
        except (KeyError, TypeError, ValueError, FaasError) as exc:
            log.warning("bad %r message from the balancer %r ignored (%s: %s)", op, header, type(exc).__name__, exc)

    # -- the balancer's messages -----------------------------------------------------------

    def op_assign(self, header):
        self.scheduler.assigned(header["job"], header["worker"])

    def op_reject(self, header):
        self.scheduler.rejected(header["job"], header.get("message") or "no worker available")

    def op_stats(self, header):
        waiter = self._stat_waiters.get(header.get("req"))
        if waiter is not None and not waiter.done():
            waiter.set_result(header)


class LinkProtocol(framing.SinkProtocol):
    """The link's connection: the balancer's frames are read straight into a FrameSink and
    dispatched from the read callback; `lost` gets why the connection ended (None: closed)."""

    def __init__(self, link):
        super().__init__()
        self.link = link
        self.lost = asyncio.get_running_loop().create_future()

    def frame(self, header, body):
        self.link.dispatch(header)

    def broken(self, exc):
        self._end(exc)
        self.transport.close()

    def ended(self, inside_frame):
        self._end(ProtocolError("connection closed inside a frame") if inside_frame else None)

    def connection_lost(self, exc):
        self._end(exc)

    def _end(self, why):
        if not self.lost.done():
            self.lost.set_result(why)
