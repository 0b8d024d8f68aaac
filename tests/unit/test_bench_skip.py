"""`minifaas bench` on a machine that lacks a scenario's toolchain: the scenario is recorded as
skipped, with the install command, and the run is not a failure (the design's "A fresh machine")."""

import argparse
import json

from support import ROOT

from harness import bench
from harness.render import redraw
from reference.functions import toolchains

SCENARIO = """
name = "needs-php"
description = "one PHP function"
workers = 1
strategies = ["RR"]

[[functions]]
name = "hello"
lang = "php"
source = "examples/hello.php"

[[phases]]
name = "closed"
kind = "closed"
function = "hello"
threads = 1
requests = 2
"""


def test_a_scenario_whose_toolchain_is_missing_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    path = tmp_path / "needs-php.toml"
    path.write_text(SCENARIO)
    real = toolchains.find
    monkeypatch.setattr(toolchains, "find", lambda lang, *a, **k: None if lang == "php" else real(lang, *a, **k))
    monkeypatch.chdir(ROOT)
    code = bench.cli(argparse.Namespace(scenarios=[str(path)], out=str(tmp_path / "out"), strategies=None))
    assert code == 0
    said = capsys.readouterr()
    assert "SKIPPED" in said.out + said.err and "apt-get install php-cli" in said.out + said.err
    result = json.loads((tmp_path / "out" / "needs-php" / "result.json").read_text())
    assert result["ok"] is True and result["skipped"] == ["no php toolchain: apt-get install php-cli"]
    report = (tmp_path / "out" / "needs-php" / "report.md").read_text()
    assert "skipped" in report and "apt-get install php-cli" in report
    # Redrawn from its file, as every report is.
    assert redraw.redraw(result, str(tmp_path / "out" / "needs-php")) == [str(tmp_path / "out" / "needs-php" / "report.md")]


def test_what_a_scenario_needs_is_checked_per_language(tmp_path):
    path = tmp_path / "needs-php.toml"
    path.write_text(SCENARIO)
    from harness.run import scenario

    sc = scenario.load(str(path))
    assert bench.missing(sc) == ([] if toolchains.find("php") else ["no php toolchain: apt-get install php-cli"])
