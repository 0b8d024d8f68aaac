"""The server's link to the balancer counts as up only once the balancer answers: a dying
balancer's listening socket can still take a connection, and a server that called that
connected reported healthy, then answered the next call 503."""

import asyncio
import os
import tempfile

from reference.server.balancer_link import BalancerLink
from reference.wire import framing, ops

DEADLINE_S = 10.0


class Scheduler:
    def __init__(self):
        self.ups = 0
        self.losses = 0

    def balancer_up(self):
        self.ups += 1

    def balancer_lost(self):
        self.losses += 1


async def until(predicate, what):
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "never happened: %s" % what
        await asyncio.sleep(0.005)


def test_a_balancer_that_takes_the_connection_and_closes_it_is_not_up_and_one_that_answers_is():
    async def main():
        path = os.path.join(tempfile.mkdtemp(prefix="mf-link-", dir="/tmp"), "lb.sock")
        accepted, answering = [], False

        async def handle(reader, writer):
            accepted.append(writer)
            if not answering:
                writer.close()      # like a dying balancer: taken, never answered
                return
            frames = framing.AsyncFrameReader(reader)
            try:
                while True:
                    header, _ = await frames.read_frame()
                    if header["op"] == ops.STATS:
                        writer.write(framing.encode(ops.balancer_stats(header["req"], "FAKE", 0, [])))
            except (EOFError, ConnectionError):
                pass

        listener = await asyncio.start_unix_server(handle, path)
        scheduler = Scheduler()
        link = BalancerLink(path, scheduler)
        task = asyncio.get_running_loop().create_task(link.run())
        try:
            await until(lambda: len(accepted) >= 3, "the link tries again")
            assert not link.connected and scheduler.ups == 0 and scheduler.losses == 0
            assert link.send(ops.done(1, 0)) is False
            answering = True
            await until(lambda: link.connected, "the link is up once the balancer answers")
            assert scheduler.ups == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            listener.close()
            os.unlink(path)
            os.rmdir(os.path.dirname(path))

    asyncio.run(main())
