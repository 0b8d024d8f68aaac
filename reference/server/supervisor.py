"""`minifaas up`: the balancer, the server (with its workers) and the gateway in one command.

The supervisor starts the three components as child processes, restarts one that dies so
service resumes by itself, and on Ctrl-C or SIGTERM stops them gateway first, balancer last
(TERM, wait, KILL), then removes the sockets. Signal handlers only record the signal; the
main loop does the work.
"""

import logging
import os
import signal
import subprocess
import sys
import time


log = logging.getLogger(__name__)

POLL_S = 0.1
STOP_GRACE_S = 8.0
# A component that dies this many times within RESTART_WINDOW_S is broken: give up.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 30.0
# A component that exits with NO_RESTART could not start (a usage error, its port or socket in
# use, refused credentials): a restart would fail the same way, so `up` stops with its message
# instead of six restarts and six tracebacks.
NO_RESTART = 2


def component_commands(balancer, server, gateway, log_level):
    """The three command lines, in start order: the seed's three terminals, from the settings
    `minifaas up` was given. The API key is not among them: it travels in the environment."""
    base = [sys.executable, "-m", "reference", "--log-level", log_level]
    socks = ["--lb-sock", balancer.lb_sock, "--server-sock", server.server_sock]
    balancer_cmd = base + ["balancer", "--strategy", balancer.strategy] + socks
    if balancer.weights:
        balancer_cmd += ["--weights", ",".join(map(str, balancer.weights))]
    server_cmd = base + ["server", "--workers", str(server.workers), "--max-queue", str(server.max_queue),
                         "--min-workers", str(server.min_workers), "--max-workers", str(server.max_workers),
                         "--executor", server.executor, "--nats", server.nats_url,
                         "--scale-cooldown", str(server.scale_cooldown)] + socks
    server_cmd += nats_flags(server.nats)
    limits = gateway.limits
    gateway_cmd = base + ["gateway", "--host", gateway.host, "--port", str(gateway.port),
                          "--functions", gateway.functions, "--http", gateway.http,
                          "--threads", str(gateway.threads), "--max-timeout-ms", str(limits.max_timeout_ms),
                          "--max-memory-mb", str(limits.max_memory_mb)] + socks
    gateway_cmd += ["--keep-answers-mb", str(gateway.keep_answers_mb), "--max-connections", str(gateway.max_connections)]
    for name in gateway.public_names:
        gateway_cmd += ["--public-name", name]
    return {"balancer": balancer_cmd, "server": server_cmd, "gateway": gateway_cmd}


def nats_flags(nats):
    """The NATS connection's flags: file paths and switches only; a password or token stays in
    the environment the children inherit (FAAS_NATS_PASSWORD, FAAS_NATS_TOKEN)."""
    flags = []
    for flag, value in (("--nats-creds", nats.creds), ("--nats-ca", nats.ca), ("--nats-replicas", nats.replicas)):
        if value is not None:
            flags += [flag, str(value)]
    return flags + (["--nats-insecure"] if nats.insecure else [])


class Supervisor:
    def __init__(self, commands, sockets):
        self.commands = commands
        self.sockets = sockets
        self.procs = {}
        self.deaths = {name: [] for name in commands}
        self.signals = []

    def record_signal(self, signum, frame):
        self.signals.append(signum)

    def start(self, name):
        # Same process group as the supervisor: Ctrl-C reaches everyone, and killing the group
        # from outside (tests, CI) leaves nothing behind.
        self.procs[name] = subprocess.Popen(self.commands[name], stdin=subprocess.DEVNULL)
        log.info("started %s (pid %d)", name, self.procs[name].pid)

    def run(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.record_signal)
        for name in self.commands:
            self.start(name)
        try:
            while not self.signals:
                self.restart_the_dead()
                time.sleep(POLL_S)
        except GiveUp as exc:
            log.error("%s", exc)
            return self.stop(1)
        log.info("stopping on %s", signal.Signals(self.signals[0]).name)
        return self.stop(0)

    def restart_the_dead(self):
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            if code == NO_RESTART:
                raise GiveUp("%s could not start (exit code %s): see its message above" % (name, code))
            recent = [t for t in self.deaths[name] if now - t < RESTART_WINDOW_S] + [now]
            self.deaths[name] = recent
            if len(recent) > MAX_RESTARTS:
                raise GiveUp("%s died %d times in %.0f s (last exit code %s): giving up"
                             % (name, len(recent), RESTART_WINDOW_S, code))
            log.warning("%s exited with code %s: restarting it", name, code)
            self.start(name)

    def stop(self, code):
        for name in reversed(list(self.commands)):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killing it", name, STOP_GRACE_S)
                proc.kill()
                proc.wait()
        for path in self.sockets:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        log.info("stopped")
        return code


class GiveUp(Exception):
    pass


def up(settings):
    balancer, server, gateway = settings.balancer, settings.server, settings.gateway
    if gateway.api_key:
        # Through the environment, not the command line, where `ps` would show it to everyone.
        os.environ["FAAS_API_KEY"] = gateway.api_key
    if gateway.invoke_key:
        os.environ["FAAS_INVOKE_KEY"] = gateway.invoke_key
    sockets = [balancer.lb_sock, server.server_sock]
    supervisor = Supervisor(component_commands(balancer, server, gateway, settings.log_level), sockets)
    print("Mini FaaS: %s strategy, %d workers, http://%s:%d (Ctrl-C stops everything)"
          % (balancer.strategy, server.workers, gateway.host, gateway.port), file=sys.stderr, flush=True)
    return supervisor.run()
