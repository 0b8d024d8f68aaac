"""Attacks on the NATS executor, each by a hostile client against a real authenticated
cluster: anonymous and wrong credentials, a host's credentials used to read or forge, forged
code, a forged "gone", and a host pointed at a server that lets anyone in."""

import asyncio
import concurrent.futures
import hashlib
import os
import re
import subprocess
import sys
import time

import pytest
from nats_support import (
    client,
    hosts_up,
    need_nats,
    run,
    start_stack,
    timed_load,
    two_hosts_behind_rr,
)
from support import EXAMPLES, deploy, invoke

from reference.executors.nats import executor as nats_executor
from reference.executors.nats.codecache import CodeCache, pack
from reference.executors.nats.executor import LocalCluster, Node, stop_process
from reference.wire.errors import FaasError


@pytest.fixture(scope="module")
def secured():
    """Two hosts of one worker each behind one RR stack."""
    yield from two_hosts_behind_rr()


def _greets(stack, n, limit_s=10.0):
    results = timed_load(stack.url, "greet", [str(i) for i in range(n)], threads=2)
    for data, status, answer, seconds in results:
        assert status == 200, answer
        assert answer["output"] == "Hello, %s!\n" % data
        assert seconds < limit_s, results
    return results


def test_anonymous_and_wrong_credentials_are_refused(secured):
    cluster, _ = secured
    for user, password in ((None, None), ("platform", "wrong"), ("host", cluster.passwords["platform"])):
        with pytest.raises(Exception):
            run(client(cluster.url, user, password), timeout=10)
    # A host given a wrong password says so and stops, rather than waiting for ever.
    proc = _host_process(cluster.url, {"FAAS_NATS_USER": "host", "FAAS_NATS_PASSWORD": "wrong"})
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        stop_process(proc, grace=2)
    assert proc.returncode == 2, out.decode()
    assert "refused these credentials" in out.decode(), out.decode()


def test_host_credentials_cannot_read_jobs_answers_or_heartbeats_nor_publish_jobs(secured):
    import nats.js.api

    cluster, stack = secured
    errors, seen = [], []

    async def attack():
        nc = await client(cluster.url, "host", cluster.passwords["host"], errors=errors)
        js = nc.jetstream(timeout=2)

        async def record(msg):
            seen.append(msg.subject)

        for subject in ("faas.>", nats_executor.JOBS + ".>", nats_executor.RESULTS + ".*",
                        nats_executor.HEARTBEATS + ".*", "faas.code.*", "$JS.API.>"):
            await nc.subscribe(subject, cb=record)
        await nc.flush()
        loop = asyncio.get_running_loop()
        calls = loop.run_in_executor(None, _greets, stack, 4)
        outcomes = {}
        # Inject a job, read a stored one, or open a consumer on a host's jobs: all refused.
        attempts = {
            "publish a job": js.publish(nats_executor.host_subject("host1"), pack({"job_id": 1}, b"forged")),
            "read a stored job": js.get_msg(nats_executor.STREAM, 1),
            "consume host1's jobs": js.add_consumer(nats_executor.STREAM, nats.js.api.ConsumerConfig(
                filter_subject=nats_executor.host_subject("host1"), ack_policy="explicit")),
            "purge the stream": js.purge_stream(nats_executor.STREAM),
        }
        for what, attempt in attempts.items():
            try:
                await attempt
                outcomes[what] = "allowed"
            except Exception as exc:
                outcomes[what] = "refused: %r" % exc
        await calls
        await asyncio.sleep(0.5)
        await nc.close()
        return outcomes

    outcomes = run(attack())
    assert all(o.startswith("refused") for o in outcomes.values()), outcomes
    assert seen == [], seen
    violations = [e for e in errors if "permissions violation" in e.lower()]
    assert len(violations) >= 6, errors
    # Nothing forged ran: both hosts only ever ran the platform's jobs.
    for host in cluster.hosts:
        assert "forged" not in cluster.output(host)


def test_forged_answers_are_dropped_and_the_real_one_arrives(secured):
    cluster, stack = secured
    server_id = re.search(r"\(server ([0-9a-f]{12})\)", stack.output())[1]
    results = nats_executor.RESULTS + "." + server_id

    async def forge():
        nc = await client(cluster.url, "host", cluster.passwords["host"])
        loop = asyncio.get_running_loop()
        calls = loop.run_in_executor(None, lambda: timed_load(stack.url, "slow", [str(i) for i in range(4)], 2))
        deadline = time.monotonic() + 30
        while not calls.done() and time.monotonic() < deadline:
            # Job ids are small integers: answer every plausible one with a forged output.
            for job_id in range(1, 300):
                header = {"job_id": job_id, "host": "host1", "worker": 0, "stdout_len": 7, "exit_code": 0}
                await nc.publish(results, pack(header, b"forged\n"))
            await nc.flush()
            await asyncio.sleep(0.05)
        await nc.close()
        return await calls

    for data, status, answer, _ in run(forge()):
        assert status == 200, answer
        assert answer["output"] == "slow %s\n" % data
    assert "without its token" in stack.output()


def test_forged_gone_and_a_deleted_consumer_do_not_black_hole_a_host(secured):
    cluster, stack = secured
    _greets(stack, 4)

    async def attack():
        nc = await client(cluster.url, "host", cluster.passwords["host"])
        js = nc.jetstream(timeout=2)
        for _ in range(3):
            await nc.publish(nats_executor.HEARTBEATS + ".host1",
                             pack({"host": "host1", "slots": 1, "gone": True, "boot": "forged"}))
            await asyncio.sleep(0.2)
        try:  # hosts share one credential, which may delete consumers (its own, at start)
            await js.delete_consumer(nats_executor.STREAM, nats_executor.consumer_name("host1"))
        finally:
            await nc.close()

    run(attack())
    # host1 is back within a few heartbeats, and its share of calls is answered.
    hosts_up(stack.url, ["host1", "host2"], timeout=10)
    # Calls for it sent before its consumer check (every 2 s) makes the consumer again wait in
    # the stream for that, not for a timeout.
    results = _greets(stack, 8, limit_s=6.0)
    hosts = {answer["worker"] // nats_executor.SLOTS_PER_HOST for _, _, answer, _ in results}
    assert len(hosts) == 2, results   # RR over both hosts' slots: host1 takes its share
    assert "its consumer is gone: making it again" in cluster.output("host1")


class _FakeNats:
    """Answers code requests from a dict: a forger standing in for the platform."""

    def __init__(self, listing, files):
        self.listing, self.files = listing, files

    async def request(self, subject, data, timeout):
        from reference.executors.nats.codecache import unpack

        header, _ = unpack(data)

        class Msg:
            pass

        msg = Msg()
        if "file" not in header:
            msg.data = pack({"files": self.listing})
        else:
            content = self.files.get(header["file"], b"")
            msg.data = pack({"file": header["file"]}, content[header["offset"]:header["offset"] + 512 * 1024])
        return msg


def _digest(files):
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(b"%s\0%d\0" % (name.encode(), len(data)))
        h.update(data)
    return h.hexdigest()


def test_forged_code_is_refused_before_anything_is_written(tmp_path):
    cache_dir, outside = tmp_path / "cache", tmp_path / "outside"
    cache = CodeCache(str(cache_dir))
    evil = {"../outside": b"owned", "code.py": b"print(1)"}
    attacks = [
        ({n: len(d) for n, d in evil.items()}, evil, _digest(evil)),              # traversal, own digest
        ({"/etc/x": 1}, {"/etc/x": b"x"}, _digest({"/etc/x": b"x"})),              # absolute path
        ({"code.py/../../x": 1}, {"code.py/../../x": b"x"}, "0" * 64),
        ({"code.py": 3}, {"code.py": b"bad"}, _digest({"code.py": b"good"})),      # not the digest's code
        ({"code.py": 1 << 40}, {}, "1" * 64),                                     # absurd size
    ]
    for listing, files, digest in attacks:
        with pytest.raises(FaasError):
            asyncio.run(cache.get(_FakeNats(listing, files), digest))
    assert not outside.exists()
    assert sorted(os.listdir(cache_dir)) == []   # not even a partial temporary directory
    good = {"code.py": b"print(1)\n", "metadata.json": b"{}"}
    path = asyncio.run(cache.get(_FakeNats({n: len(d) for n, d in good.items()}, good), _digest(good)))
    assert sorted(os.listdir(path)) == ["code.py", "metadata.json"]


def _host_process(url, env, *flags):
    return subprocess.Popen([sys.executable, "-m", "reference", "worker-host", "--nats", url, "--workers", "1",
                             "--host-id", "probe"] + list(flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict({k: v for k, v in os.environ.items() if not k.startswith("FAAS_NATS")}, **env),
                            start_new_session=True)


def test_hosts_refuse_a_server_that_lets_anyone_in(tmp_path):
    need_nats()
    node = Node("open", nats_executor.free_port(), 0)
    nats_executor.start_nats(str(tmp_path), node, "server_name: open\nlisten: 127.0.0.1:%d\njetstream { store_dir: %s }\n"
                             % (node.port, tmp_path / "js"))
    procs = []
    try:
        cases = [({"FAAS_NATS_USER": "host", "FAAS_NATS_PASSWORD": "x"}, (), "accepts anonymous clients"),
                 ({}, (), "no NATS credentials")]
        for env, flags, expected in cases:
            proc = _host_process(node.url, env, *flags)
            procs.append(proc)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 2, out.decode()
            assert expected in out.decode()
        # --nats-insecure is the operator's explicit choice: then it serves.
        proc = _host_process(node.url, {}, "--nats-insecure")
        procs.append(proc)
        def serving():
            for line in iter(proc.stdout.readline, b""):
                if b"taking jobs" in line:
                    return True
            return False

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            found = pool.submit(serving)
            try:
                assert found.result(timeout=20)
            finally:
                stop_process(proc)  # ends the reading thread too (end of file)
    finally:
        for proc in procs:
            stop_process(proc, grace=2)
        stop_process(node.proc)


def test_tls_cluster_serves_and_a_host_without_the_ca_is_refused():
    need_nats()
    with LocalCluster(hosts=1, workers=1, tls=True) as cluster:
        assert cluster.url.startswith("tls://")
        stack = start_stack(cluster)
        try:
            deploy(stack.url, "greet", "python", EXAMPLES / "greet.py")
            hosts_up(stack.url, ["host1"])
            status, answer, _ = invoke(stack.url, "greet", "tls")
            assert status == 200 and answer["output"] == "Hello, tls!\n", answer
        finally:
            stack.close()
        # The right password, but no CA to check the server with: refused, not downgraded.
        proc = _host_process(cluster.url, cluster.host_env)
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            stop_process(proc, grace=2)
        assert proc.returncode == 2, out.decode()
        assert "TLS" in out.decode(), out.decode()
        # Nor does a plain-text client get in on the TLS port.
        with pytest.raises(Exception):
            run(client(cluster.url.replace("tls://", "nats://"), "host", cluster.passwords["host"]), timeout=10)


def test_up_passes_nats_files_and_switches_to_the_server_never_a_secret(monkeypatch):
    from reference import cli
    from reference.server.supervisor import component_commands

    monkeypatch.setenv("FAAS_NATS_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("FAAS_NATS_USER", "platform")
    args = cli.build_parser(["up"]).parse_args(
        ["up", "--executor", "nats", "--nats", "tls://a:4222,tls://b:4222", "--nats-creds", "/etc/p.creds",
         "--nats-ca", "/etc/ca.pem", "--nats-replicas", "3"])
    settings = cli.up_settings(args)
    assert settings.server.nats.creds == "/etc/p.creds" and settings.server.nats.replicas == 3
    commands = component_commands(settings.balancer, settings.server, settings.gateway, "INFO")
    server = commands["server"]
    assert server[server.index("--nats-creds") + 1] == "/etc/p.creds"
    assert server[server.index("--nats-ca") + 1] == "/etc/ca.pem"
    assert "--nats-insecure" not in server
    assert not any("s3cret" in part for cmd in commands.values() for part in cmd)
    with pytest.raises(SystemExit):   # refused before anything starts
        cli.main(["worker-host", "--nats-replicas", "0"])


def test_a_missing_or_empty_credentials_file_is_refused_at_once(tmp_path):
    from reference.config import NatsSettings
    from reference.executors.nats.connection import NatsRefused, connect

    empty = tmp_path / "empty.creds"
    empty.write_text("# nothing\n")
    jwt = tmp_path / "user.creds"
    jwt.write_text("-----BEGIN NATS USER JWT-----\nxx\n------END NATS USER JWT------\n")
    cases = [(str(tmp_path / "missing.creds"), "cannot read"), (str(empty), "no NATS credentials")]
    try:
        import nkeys  # noqa: F401
    except ImportError:
        cases.append((str(jwt), "pip install nkeys"))
    for path, expected in cases:
        with pytest.raises(NatsRefused, match=expected):
            run(connect(NatsSettings(url="nats://127.0.0.1:1", creds=path), "probe"), timeout=10)
