"""`need_toolchain(lang)` for tests: the Toolchain, or a skip naming how to install it (a failure
when FAAS_REQUIRE_TOOLCHAINS=1, so CI cannot pass by skipping). Import: `from needs import need_toolchain`."""

import os

import pytest

from reference.functions import toolchains


def need_toolchain(lang):
    tc = toolchains.find(lang)
    if tc is None:
        reason = "no %s toolchain: %s" % (lang, toolchains.install_hint(lang))
        if os.environ.get("FAAS_REQUIRE_TOOLCHAINS") == "1":
            pytest.fail(reason + " (required: FAAS_REQUIRE_TOOLCHAINS=1)")
        pytest.skip(reason)
    return tc
