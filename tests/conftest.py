"""Fixtures shared by the tests: real stacks on private sockets and free ports, and an HTTP helper."""

import pytest

from harness.stack import Stack, StackError



@pytest.fixture
def start_stack():
    """Factory: start_stack(strategy="RR", workers=2, ...) -> a started Stack, stopped at teardown."""
    stacks = []

    def start(**kwargs):
        kwargs.setdefault("workers", 2)
        stack = Stack(**kwargs)
        stacks.append(stack)
        try:
            return stack.start()
        except StackError as exc:
            pytest.fail(str(exc))

    yield start
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="module")
def shared_stack():
    """One RR stack with 2 workers for a whole test module (tests that do not disturb it)."""
    stack = Stack(strategy="RR", workers=2)
    try:
        stack.start()
    except StackError as exc:
        stack.close()
        pytest.fail(str(exc))
    yield stack
    stack.close()
