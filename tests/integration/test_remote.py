"""The `minifaas` client commands (deploy, invoke, list, get, delete, versions, rollback)
against a real stack, run as a user runs them: as processes, with FAAS_URL."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from support import EXAMPLES, TEST_FUNCTIONS


@pytest.fixture
def mf(start_stack, tmp_path):
    stack = start_stack(workers=1)

    def run(*argv, env=None, check=True):
        proc = subprocess.run([sys.executable, "-m", "reference", *argv], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "FAAS_URL": stack.url, **(env or {})})
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc
    run.stack = stack
    return run


def test_deploy_invoke_get_list_delete_like_the_readme(mf, tmp_path):
    deployed = json.loads(mf("deploy", str(EXAMPLES / "greet.py")).stdout)
    assert deployed["ok"] and deployed["name"] == "greet" and deployed["lang"] == "python"
    # --input parses as JSON when it can: a string reaches stdin as its bytes.
    out = mf("invoke", "greet", "--input", '"Ada"')
    assert "Ada" in out.stdout
    assert json.loads(mf("invoke", "greet", "--input", "Ada", "--json").stdout)["ok"] is True
    assert mf("get", "greet", "--code").stdout == (EXAMPLES / "greet.py").read_text()
    listed = json.loads(mf("list").stdout)
    assert [f["name"] for f in listed["functions"]] == ["greet"]
    assert json.loads(mf("delete", "greet").stdout)["deleted"]
    gone = mf("invoke", "greet", check=False)
    assert gone.returncode == 1 and "function not found" in gone.stderr


def test_failures_say_why_with_exit_codes(mf, tmp_path):
    failing = mf("deploy", str(TEST_FUNCTIONS / "fail.py"), "--name", "failing", "--lang", "py")   # an alias
    assert json.loads(failing.stdout)["ok"]
    ran = mf("invoke", "failing", check=False)
    # A function that ran and failed: its output and stderr are shown, and the platform's sentence.
    assert ran.returncode == 1 and ran.stdout == "partial output\n"
    assert "something went wrong" in ran.stderr and "minifaas invoke:" in ran.stderr
    taken = mf("deploy", str(TEST_FUNCTIONS / "fail.py"), "--name", "failing", check=False)
    assert taken.returncode == 1 and "already exists" in taken.stderr
    odd = tmp_path / "code.txt"
    odd.write_text("x")
    unknown = mf("deploy", str(odd), check=False)
    assert unknown.returncode == 2 and "--lang" in unknown.stderr
    nowhere = mf("list", env={"FAAS_URL": "http://127.0.0.1:9"}, check=False)
    assert nowhere.returncode == 1 and "cannot reach the gateway" in nowhere.stderr


def test_rollback_makes_a_new_version_with_the_old_code(mf, tmp_path):
    first = tmp_path / "v.py"
    first.write_text("print('one')\n")
    mf("deploy", str(first), "--name", "v")
    second = tmp_path / "v2.py"
    second.write_text("print('two')\n")
    subprocess.run(["curl", "-s", "-X", "PUT", "%s/function/v" % mf.stack.url, "--data-binary", "@%s" % second],
                   check=True, capture_output=True, timeout=60)
    assert mf("invoke", "v").stdout == "two\n"
    versions = json.loads(mf("versions", "v").stdout)["versions"]
    assert sorted(v["version"] for v in versions) == [1, 2]
    rolled = json.loads(mf("rollback", "v", "1").stdout)
    assert rolled["ok"]
    assert mf("invoke", "v").stdout == "one\n"
    assert len(json.loads(mf("versions", "v").stdout)["versions"]) == 3
    missing = mf("rollback", "v", "9", check=False)
    assert missing.returncode == 1 and "no version 9" in missing.stderr


def test_invoke_sends_the_invoke_key_and_the_rest_the_api_key(start_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("FAAS_API_KEY", "admin-key")
    monkeypatch.setenv("FAAS_INVOKE_KEY", "call-key")
    stack = start_stack(workers=1)
    env = {**os.environ, "FAAS_URL": stack.url}

    def run(*argv, extra=None):
        return subprocess.run([sys.executable, "-m", "reference", *argv], capture_output=True, text=True,
                              timeout=120, env={**env, **(extra or {})})

    assert run("deploy", str(EXAMPLES / "greet.py")).returncode == 0
    assert "Ada" in run("invoke", "greet", "--input", "Ada").stdout
    refused = run("invoke", "greet", extra={"FAAS_INVOKE_KEY": "wrong", "FAAS_API_KEY": "wrong"})
    assert refused.returncode == 1
    assert run("list", extra={"FAAS_API_KEY": "wrong"}).returncode == 1


def test_deploy_with_env_and_secrets_and_roll_back_through_the_endpoint(mf, tmp_path):
    code = tmp_path / "conf.py"
    code.write_text("import os\nprint(os.environ['STAGE'], os.environ['TOKEN'], os.environ['PASSWORD'])\n")
    secret_file = tmp_path / "password"
    secret_file.write_text("from-a-file\n")
    # TOKEN alone: its value from the client's environment, so no command line shows it.
    deployed = json.loads(mf("deploy", str(code), "--env", "STAGE=one", "--secret", "TOKEN",
                             "--secret", "PASSWORD=@%s" % secret_file, "--max-concurrency", "2",
                             env={"TOKEN": "token-from-env"}).stdout)
    assert deployed["env"] == {"STAGE": "one"} and deployed["secrets"] == ["PASSWORD", "TOKEN"]
    assert deployed["max_concurrency"] == 2
    assert mf("invoke", "conf").stdout == "one token-from-env from-a-file\n"
    shown = mf("get", "conf").stdout
    assert "token-from-env" not in shown and "from-a-file" not in shown and '"TOKEN"' in shown
    update = json.dumps({"code": code.read_text(), "env": {"STAGE": "two"}, "secrets": {"TOKEN": "t2", "PASSWORD": "p2"}})
    req = urllib.request.Request("%s/function/conf" % mf.stack.url, data=update.encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as answer:
        assert answer.status == 200
    assert mf("invoke", "conf").stdout == "two t2 p2\n"
    rolled = json.loads(mf("rollback", "conf", "1").stdout)
    assert rolled["version"] == 3 and rolled["rolled_back_from"] == 1
    assert mf("invoke", "conf").stdout == "one token-from-env from-a-file\n"
    missing = mf("deploy", str(code), "--name", "conf2", "--secret", "NOT_SET_ANYWHERE", check=False)
    assert missing.returncode == 2 and "NOT_SET_ANYWHERE" in missing.stderr
    refused = mf("deploy", str(code), "--name", "conf3", "--env", "LD_PRELOAD=/x.so", check=False)
    assert refused.returncode == 1 and "reserved" in refused.stderr


def test_deploy_reuse_keeps_state_between_calls_and_the_default_does_not(mf):
    # One worker, so both calls reach the same resident interpreter.
    fresh = json.loads(mf("deploy", str(TEST_FUNCTIONS / "counter.js"), "--name", "fresh").stdout)
    kept = json.loads(mf("deploy", str(TEST_FUNCTIONS / "counter.js"), "--name", "kept", "--reuse").stdout)
    assert fresh["reuse"] is False and kept["reuse"] is True
    assert [mf("invoke", "fresh").stdout for _ in range(2)] == ["1 false\n"] * 2
    assert [mf("invoke", "kept").stdout for _ in range(2)] == ["1 false\n", "2 true\n"]
