"""Scratch roots (reference/worker/sandbox/scratch.py) in a private temporary directory: a stack's
root, what is swept and what is not, and the safety checks (a symlink, a directory not ours)."""

import os
import stat
import subprocess
import tempfile

import pytest

from reference.worker.sandbox import scratch


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """tempfile.gettempdir() is tmp_path, and no stack root is inherited from outside."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(scratch.ENV, raising=False)
    return tmp_path


def dead_pid():
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_stack_root_is_made_exported_and_removed(tmp):
    path = scratch.make_stack_root()
    base = tmp / ("minifaas-calls-%d" % os.geteuid())
    assert os.path.dirname(path) == str(base) and os.path.basename(path) == scratch.stack_name(os.getpid())
    assert mode(path) == 0o711 and mode(base) == 0o711
    assert os.environ[scratch.ENV] == path and scratch.root() == path
    os.mkdir(os.path.join(path, "call-1-x"))
    scratch.remove_stack_root(path)
    assert not os.path.exists(path) and scratch.ENV not in os.environ
    assert scratch.root() == str(base)   # without a stack: the machine's root, as before


def test_only_the_roots_of_gone_stacks_are_swept(tmp):
    base = tmp / ("minifaas-calls-%d" % os.geteuid())
    base.mkdir()
    gone = base / ("stack-%d-12345" % dead_pid())
    reused = base / ("stack-%d-1" % os.getpid())          # our pid, another start time: a dead stack
    alive = base / scratch.stack_name(os.getppid())      # a live process's
    other = base / "call-1-x"                            # a call directory of the machine root: not a stack
    for path in (gone, reused, alive, other):
        path.mkdir()
    path = scratch.make_stack_root()
    try:
        assert not gone.exists() and not reused.exists()
        assert alive.exists() and other.exists() and os.path.isdir(path)
    finally:
        scratch.remove_stack_root(path)


def test_a_symlink_is_never_a_root_nor_removed_through(tmp, caplog):
    target = tmp / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("mine")
    base = tmp / ("minifaas-calls-%d" % os.geteuid())
    base.symlink_to(target)
    path = scratch.make_stack_root()     # the machine root is a symlink: a private root instead
    try:
        assert "is not ours" in caplog.text
        # Not under the symlink (a path check: the private root's random name may begin with
        # the uid's digit, "minifaas-calls-0x1y2z..", which a string prefix took for it).
        assert os.path.commonpath([path, str(base)]) != str(base) and mode(path) == 0o711
        assert (target / "keep").exists() and os.listdir(target) == ["keep"]
    finally:
        scratch.remove_stack_root(path)
    assert not os.path.exists(path)

    os.environ[scratch.ENV] = str(base)    # a stack root that is a symlink is not used ...
    assert scratch.root() != str(base)
    scratch.remove_stack_root(str(base))   # ... nor removed through
    assert (target / "keep").read_text() == "mine" and base.is_symlink()
