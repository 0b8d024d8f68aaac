"""Fixtures shared by the tests: real stacks on private sockets and free ports, and an HTTP helper.

Two tiers: tests/unit runs in-process in seconds; tests/integration starts real processes and
is marked `integration`, so `pytest -m "not integration"` is the quick loop."""

import pathlib

import pytest
from support import started

INTEGRATION = pathlib.Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def start_stack():
    """Factory: start_stack(strategy="RR", workers=2, ...) -> a started Stack, stopped at teardown."""
    stacks = []

    def start(**kwargs):
        kwargs.setdefault("workers", 2)
        stacks.append(started(**kwargs))
        return stacks[-1]

    yield start
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def shared_stack():
    """One RR stack with 2 workers for a whole test module (tests that do not disturb it)."""
    stack = started(strategy="RR", workers=2)
    yield stack
    stack.close()
