"""Toolchains on the deploy side: every language is found or explained, C/Rust/Go really compile
to WASI modules, and failures come back as CompileError or ToolchainMissing."""

import json
import subprocess
import sys

import pytest
import wasmtime
from needs import need_toolchain

from reference.functions import toolchains
from reference.functions.languages import LANGUAGES
from reference.wire.errors import CompileError, ToolchainMissing
from reference.worker.wasm import engine as wasm

from support import ROOT  # noqa: E402
EXAMPLES = ROOT / "examples"
FUNCTIONS = ROOT / "tests" / "functions"

COMPILED = {"c": "hello.c", "rust": "hello.rs", "go": "hello.go"}


def test_report_lists_every_language_with_a_toolchain_or_an_install_hint():
    rows = {row["lang"]: row for row in toolchains.report()}
    assert set(rows) == set(LANGUAGES)
    for lang, row in rows.items():
        if row["ok"]:
            assert row["toolchain"] and "version" in row
        else:
            assert row["install"] == toolchains.install_hint(lang) and row["install"]
    assert rows["html"]["ok"]
    assert rows["rust"]["aliases"] == ["rs"]


def test_python_interpreter_is_found_and_runs():
    tc = need_toolchain("python")
    out = subprocess.run([tc.path, "-c", "print(6 * 7)"], capture_output=True, check=True)
    assert out.stdout == b"42\n"


@pytest.mark.parametrize("lang", ["js", "php"])
def test_interpreters_report_a_version(lang):
    tc = need_toolchain(lang)
    assert tc.path and tc.version


def test_languages_command_prints_table_and_json():
    table = subprocess.run([sys.executable, "-m", "reference", "languages"], capture_output=True, text=True,
                           cwd=ROOT, timeout=600)
    assert table.returncode == 0, table.stderr
    assert all(lang in table.stdout for lang in LANGUAGES)
    as_json = subprocess.run([sys.executable, "-m", "reference", "languages", "--json"], capture_output=True,
                             text=True, cwd=ROOT, timeout=600)
    assert as_json.returncode == 0, as_json.stderr
    assert {row["lang"] for row in json.loads(as_json.stdout)} == set(LANGUAGES)


@pytest.mark.parametrize("lang", sorted(COMPILED))
def test_compiles_the_example_to_a_wasi_command_module(lang):
    need_toolchain(lang)
    compiled = toolchains.compile_to_wasm(lang, (EXAMPLES / COMPILED[lang]).read_bytes())
    assert compiled.wasm[:4] == b"\0asm"
    assert compiled.compile_ms > 0 and compiled.toolchain
    module = wasmtime.Module(wasm.make_engine(), compiled.wasm)
    assert "_start" in [export.name for export in module.exports]
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}
    # The precompiled artifact loads back into an engine of the same configuration.
    artifact = wasm.precompile(compiled.wasm)
    wasmtime.Module.deserialize(wasm.make_engine(), artifact)


def test_compile_error_carries_the_compiler_message():
    need_toolchain("c")
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("c", (FUNCTIONS / "broken.c").read_bytes())
    err = info.value
    assert err.status == 422 and err.message == "compilation failed"
    assert "undefined_variable" in err.extra["details"]
    assert "minifaas-build-" not in err.extra["details"]   # scratch paths are not leaked


@pytest.mark.parametrize("lang", ["rust", "go"])
def test_compile_errors_in_rust_and_go(lang):
    need_toolchain(lang)
    source = b"fn main() { let x: u32 = \"no\"; }\n" if lang == "rust" else b"package main\nfunc main() { x := }\n"
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm(lang, source)
    assert info.value.extra["details"]


def test_compiler_past_its_time_limit_is_stopped():
    need_toolchain("c")
    with pytest.raises(CompileError) as info:
        toolchains.compile_to_wasm("c", (EXAMPLES / "hello.c").read_bytes(), timeout_s=0.001)
    assert "longer than" in info.value.extra["details"]


@pytest.mark.parametrize("lang", sorted(COMPILED))
def test_missing_toolchain_says_how_to_install_it(lang, tmp_path):
    # An empty search path: no compiler anywhere, and the fixed locations are not consulted.
    assert toolchains.find(lang, str(tmp_path)) is None
    with pytest.raises(ToolchainMissing) as info:
        toolchains.compile_to_wasm(lang, b"int main(void) { return 0; }", search_path=str(tmp_path))
    err = info.value
    assert err.status == 503
    assert err.extra["install"] == toolchains.install_hint(lang)
    assert err.extra["install"] in err.message


def test_a_compiler_on_a_custom_search_path_is_found(tmp_path):
    tc = need_toolchain("c")
    if tc.name != "clang":
        pytest.skip("the C toolchain here is %s, not clang" % tc.name)
    # A wrapper script, as a wasi-sdk or a distribution's alternatives would install one.
    wrapper = tmp_path / "clang"
    wrapper.write_text("#!/bin/sh\nexec %s \"$@\"\n" % tc.path)
    wrapper.chmod(0o755)
    found = toolchains.find("c", str(tmp_path))
    assert found is not None and found.path == str(tmp_path / "clang")
