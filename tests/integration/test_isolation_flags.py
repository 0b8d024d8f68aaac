"""What a component says about the isolation it can give at start: --require-isolation refuses
to start on a weak machine, without it the platform starts and warns loudly."""

import os
import subprocess
import sys

import pytest


def start(argv, tmp_path, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "reference", *argv, "--server-sock", str(tmp_path / "s.sock"),
                           "--lb-sock", str(tmp_path / "lb.sock")], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, start_new_session=True)


@pytest.mark.parametrize("command", ["server", "up"])
def test_require_isolation_refuses_a_weak_machine_before_anything_starts(command, tmp_path):
    done = start([command, "--require-isolation", "--workers", "1"], tmp_path, env={"FAAS_NO_BWRAP": "1"})
    assert done.returncode == 1
    assert "refusing to start without full isolation" in done.stderr
    assert "bubblewrap" in done.stderr                  # says what is missing
    assert not os.path.exists(tmp_path / "s.sock") and not os.path.exists(tmp_path / "lb.sock")


def test_without_the_flag_a_weak_machine_starts_and_says_so(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "reference", "server", "--workers", "1",
                             "--server-sock", str(tmp_path / "s.sock"), "--lb-sock", str(tmp_path / "lb.sock")],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "FAAS_NO_BWRAP": "1"},
                            start_new_session=True)
    try:
        line = ""
        for line in proc.stderr:
            if "WEAK" in line or "listening" in line:
                break
        assert "WEAK" in line and "bubblewrap" in line
    finally:
        proc.terminate()
        proc.wait(10)
