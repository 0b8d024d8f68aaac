"""A function's env and secrets with the NATS executor: they reach a worker host in the Job (it
has no functions directory), and its code cache keeps no secret (secrets.json is not shipped)."""

import json
import os

from nats_support import cluster_behind_stack, hosts_up
from support import TEST_FUNCTIONS, http, invoke

SECRET = "nats-secret-of-the-test-41d2"


def test_env_and_secrets_reach_a_remote_host_and_stay_out_of_its_cache():
    with cluster_behind_stack(1, 1) as (cluster, stack):
        hosts_up(stack.url, ["host1"])
        status, answer, _ = http("POST", stack.url + "/deploy", json.dumps(
            {"name": "env", "lang": "python", "code": (TEST_FUNCTIONS / "env.py").read_text(),
             "env": {"STAGE": "remote"}, "secrets": {"API_TOKEN": SECRET}}), {"Content-Type": "application/json"})
        assert status == 201, answer
        status, ran, _ = invoke(stack.url, "env")
        assert status == 200, ran
        env = json.loads(ran["output"])
        assert env["STAGE"] == "remote" and env["API_TOKEN"] == SECRET
        cache = os.path.join(cluster.dir, "cache-host1")
        cached = [os.path.join(root, name) for root, _, names in os.walk(cache) for name in names]
        assert any(path.endswith("metadata.json") for path in cached), cached
        for path in cached:
            assert not path.endswith("secrets.json"), path
            with open(path, "rb") as f:
                assert SECRET.encode() not in f.read(), path
        assert SECRET not in cluster.output("host1")
