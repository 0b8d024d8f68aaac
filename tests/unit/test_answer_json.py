"""The fast path's answer JSON (reference/gateway/fast.py, the json module's C encoder made
once) is byte for byte what bottle's JSON plugin writes with json.dumps: clients that compare
answers, and the test that sends both paths the same requests, see one format."""

import json

import pytest

from reference.gateway import fast

BODIES = [
    {"ok": True, "output": "Hello, test data!\n", "stderr": "", "exit_code": 0, "duration_ms": 1.234,
     "worker": 3, "truncated": False, "cold": False, "queue_ms": 0.012, "init_ms": 0.0, "exec_ms": 0.456},
    {"ok": False, "kind": "function_failed", "error": "function exited with code 1", "exit_code": 1,
     "output": "", "stderr": "Traceback (most recent call last):\n  ...\nValueError: x\n"},
    {"output": "caf\u00e9 \u2603 \U0001f600 \x00\x1f \"quoted\" \\ /", "ok": True},   # escapes, astral
    {"ok": True, "n": 10 ** 30, "neg": -1, "tiny": 1e-05, "big": 1e16, "third": 1 / 3, "nan": float("nan"),
     "inf": float("inf"), "minf": float("-inf"), "none": None},
    {"ok": True, "nested": {"a": [1, 2.5, "x", {"b": []}], "c": {}}, "empty": ""},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_answer_is_what_json_dumps_writes(body):
    assert fast._dumps(body) == json.dumps(body)


def test_what_json_cannot_write_is_refused_as_json_refuses_it():
    with pytest.raises(TypeError):
        json.dumps({"ok": True, "x": object()})
    with pytest.raises(TypeError):
        fast._dumps({"ok": True, "x": object()})
