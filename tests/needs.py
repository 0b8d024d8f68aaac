"""What a test needs from this machine, or a skip naming what is missing (a failure when
FAAS_REQUIRE_TOOLCHAINS=1, so CI cannot pass by skipping): `need_toolchain(lang)` gives the
Toolchain, `need_sandbox()` bubblewrap. Import: `from needs import need_toolchain`."""

import os

import pytest

from reference.functions import toolchains


def missing(reason):
    """Skip the test for `reason`, or fail it when CI requires every toolchain and sandbox."""
    if os.environ.get("FAAS_REQUIRE_TOOLCHAINS") == "1":
        pytest.fail(reason + " (required: FAAS_REQUIRE_TOOLCHAINS=1)")
    pytest.skip(reason)


def need_toolchain(lang):
    tc = toolchains.find(lang)
    if tc is None:
        missing("no %s toolchain: %s" % (lang, toolchains.install_hint(lang)))
    return tc


def need_sandbox():
    from reference.worker.sandbox import isolation
    if not isolation.sandboxed():
        missing("no bubblewrap sandbox here: %s" % "; ".join(isolation.describe()["missing"]))
