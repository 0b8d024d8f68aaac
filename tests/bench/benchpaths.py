"""Paths the benchmarks share (a module of its own: `conftest` is a name the tests already use)."""

import pathlib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLES = ROOT / "examples"
