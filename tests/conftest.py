"""Fixtures shared by the tests: real stacks on private sockets and free ports, and an HTTP helper."""

import pytest

from support import started



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
