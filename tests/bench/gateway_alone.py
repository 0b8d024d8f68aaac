"""The gateway alone: a real `minifaas gateway` process in front of a stand-in server that
answers every invoke frame at once with hello's Outcome, under bench_e2e's 16-client keep-alive
load. Nothing else of the stack runs, so the gateway's CPU per request is measured without the
server, the balancer and the workers sharing the two cores with it (and without their noise).

    python tests/bench/gateway_alone.py [SECONDS] [TREE ...]     prints one line a tree, in turn

Each TREE (default: this checkout) is a checkout whose `reference` the gateway runs from
(`git worktree add /tmp/base COMMIT` for a base to pair against); give two and alternate them by
repeating: `... 4 /tmp/base . /tmp/base .`. FAAS_ALONE_BODY sets the invoke body (default the
bench's JSON {"input": "test data"}; a plain text takes the other branch of the input rule).

Read what it prints as the gateway's own cost at a high rate with warm caches: 8-12 k req/s
here, where a hello request through the whole stack comes at 3-4 k req/s and costs the gateway
20-35 % more (docs/PERFORMANCE.md, "An eighth look"). A change that pays here may not pay there.
The user / system split it prints is the kernel's tick sampling on this VM: trust the total.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, CHECKOUT]

import keepalive  # noqa: E402

CLIENTS = 16
BODY = os.environ.get("FAAS_ALONE_BODY", json.dumps({"input": "test data"})).encode()


def serve(path):
    """The stand-in server on the UNIX socket `path`: an Outcome for every invoke frame, an
    answer to anything else that /health reads as all up, each with the frame's `req`."""
    import uvloop

    from reference.wire import framing
    from reference.wire.jobs import Outcome

    header, body = Outcome(stdout=b"Hello from FAAS!\ntest data", exec_ms=0.05, worker=1,
                           queue_ms=0.01).to_wire()

    class StandIn(framing.SinkProtocol):
        def frame(self, asked, _):
            if asked.get("op") == "invoke":
                self.transport.write(framing.encode(dict(header, req=asked["req"]), body))
            else:
                self.transport.write(framing.encode({"req": asked.get("req"), "server": True, "balancer": True,
                                                     "workers": 1}))

    async def main():
        server = await asyncio.get_running_loop().create_unix_server(StandIn, path)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])     # utime, stime (ticks)


def measure(tree, seconds):
    """One fresh gateway from `tree`: requests/s and its CPU per request (total, user, system)."""
    tmp = tempfile.mkdtemp(prefix="gateway-alone-")
    sock, port = os.path.join(tmp, "server.sock"), _free_port()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    stand_in = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", sock], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    gateway = None
    try:
        assert stand_in.stdout.readline().strip() == "ready", "the stand-in server did not start"
        # cwd outside every tree: `python -m reference` would take the working directory's first.
        gateway = subprocess.Popen([sys.executable, "-m", "reference", "gateway", "--server-sock", sock,
                                    "--lb-sock", os.path.join(tmp, "lb.sock"), "--port", str(port),
                                    "--functions", os.path.join(tmp, "functions"), "--log-level", "WARNING"],
                                   env=env, cwd=tmp, start_new_session=True)
        url = "http://127.0.0.1:%d" % port
        if not keepalive.wait_healthy(url, deadline_s=30.0, proc=gateway):
            raise RuntimeError("the gateway did not answer GET /health")
        keepalive.deploy(url, "hello", "python", b"print('stand-in')")
        keepalive.run(url, "/invoke?fn=hello", BODY, CLIENTS, 1.0)        # warm
        before = _cpu(gateway.pid)
        figures = keepalive.run(url, "/invoke?fn=hello", BODY, CLIENTS, seconds)
        after = _cpu(gateway.pid)
        if figures["errors"]:   # the gateway's CPU went to those too: no figure a request
            raise RuntimeError("%d requests failed, the first: %s" % (figures["errors"], figures["first_error"]))
        n, tick = figures["requests"], os.sysconf("SC_CLK_TCK")
        user, system = ((b - a) / tick / n * 1e6 for a, b in zip(before, after))
        return figures["requests"] / seconds, user + system, user, system
    finally:
        for proc in (gateway, stand_in):
            if proc is not None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                proc.wait()
        subprocess.run(["rm", "-rf", tmp], check=False)


def main(argv):
    seconds = float(argv[0]) if argv else 4.0
    for tree in argv[1:] or [CHECKOUT]:
        rate, cpu, user, system = measure(tree, seconds)
        print("%-30s %7.0f req/s  gateway %6.1f us a request (user %.1f, system %.1f)"
              % (tree, rate, cpu, user, system), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main(sys.argv[1:])
