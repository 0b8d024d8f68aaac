"""The HTML report from the golden result file: its tables hold the golden numbers, it shows
every plot harness.render.plots draws by a relative path, and Chromium renders it from disk."""

import html.parser
import os
import shutil
import subprocess
import sys

import pytest

from harness.analysis import results
from harness.render import html_report, plots

from support import ROOT  # noqa: E402
GOLDEN = os.path.join(ROOT, "tests", "golden", "result-tiny.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(html.parser.HTMLParser):
    """The parts of a page the tests read: tables by the heading above them, img sources, text."""

    def __init__(self, text):
        super().__init__()
        self.tables = {}       # heading text -> [table, ...]; a table is a list of rows of cell texts
        self.images = []
        self.text = []
        self._heading = self._cell = None
        self._row = None
        self._current = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._heading = []
        elif tag == "table":
            self.tables.setdefault(self._current, []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("h2", "h3") and self._heading is not None:
            self._current = "".join(self._heading).strip()
            self._heading = None
        elif tag in ("td", "th"):
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables[self._current][-1].append(self._row)

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)

    def table(self, heading, index=0):
        """The table as a list of dicts keyed by its header row."""
        header, *rows = self.tables[heading][index]
        return [dict(zip(header, row)) for row in rows]


@pytest.fixture(scope="module")
def golden():
    return results.load(GOLDEN)


@pytest.fixture(scope="module")
def written(golden, tmp_path_factory):
    """The plots and report.html of the golden result, in a fresh directory."""
    out = tmp_path_factory.mktemp("report")
    pngs = plots.draw_all(golden, str(out))
    path = html_report.write_html_report(golden, str(out))
    with open(path, encoding="utf-8") as f:
        return path, pngs, Page(f.read())


def spread(s):
    return "%.1f ± %.1f" % (s["mean"], s["stdev"])


def test_phase_tables_hold_the_golden_numbers(golden, written):
    path, _, page = written
    assert os.path.basename(path) == "report.html"
    for phase in golden["scenario"]["phases"]:
        rows = {row["strategy"]: row for row in page.table("Phase %s" % phase)}
        assert set(rows) == set(golden["scenario"]["strategies"])
        for strategy, row in rows.items():
            agg = golden["strategies"][strategy]["phases"][phase]["aggregate"]
            runs = golden["strategies"][strategy]["phases"][phase]["runs"]
            assert row["runs"] == str(len(runs)) == str(agg["runs"])
            assert row["requests"] == str(sum(r["requests"] for r in runs))
            assert row["ok"] == str(agg["ok"]) and row["errors"] == "0"
            assert row["throughput (req/s)"] == spread(agg["throughput_rps"])
            for q in ("p50", "p90", "p99", "max", "mean"):
                assert row["%s ms" % q] == spread(agg["latency_ms"][q]), (strategy, phase, q)
    # The same figures report.md has (tests/test_report.py), read off by a person.
    closed = {row["strategy"]: row for row in page.table("Phase closed")}
    assert closed["RR"]["throughput (req/s)"] == "33.7 ± 9.1"
    assert closed["FIFO"]["throughput (req/s)"] == "46.1 ± 10.1"


def test_workers_cold_starts_deploys_and_the_comparison(golden, written):
    _, _, page = written
    workers = {row["worker"]: row for row in page.table("Requests per worker (all runs)")}
    assert workers["0"]["FIFO"] == "21" and workers["1"]["FIFO"] == "19"
    cold = {row["strategy"]: row for row in page.table("First invocation after deploy (cold start)")}
    assert cold["RR"]["latency ms"] == "%.1f" % golden["strategies"]["RR"]["cold"]["greet"]["latency_ms"] == "78.4"
    assert cold["RR"]["cold"] == "True" and cold["RR"]["ok"] == "yes"
    deploys = page.table("Deploys")
    assert {(d["function"], d["strategy"], d["lang"], d["ok"]) for d in deploys} == {
        ("greet", "RR", "python", "yes"), ("greet", "FIFO", "python", "yes")}
    text = "".join(page.text)
    assert "throughput (req/s), RR vs FIFO: 33.7 vs 46.1: not significant" in text
    assert "commit 9e0c2fd72909" in text


def test_every_plot_is_shown_by_a_relative_path_beside_the_page(written):
    path, pngs, page = written
    sources = [img["src"] for img in page.images]
    assert sorted(sources) == sorted(os.path.basename(p) for p in pngs) and len(pngs) == 4
    for src in sources:
        assert not os.path.isabs(src) and "/" not in src and "://" not in src
        with open(os.path.join(os.path.dirname(path), src), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert all(img.get("alt") for img in page.images)


def test_a_plot_not_drawn_is_said_not_linked(golden, tmp_path):
    shutil.copy(os.path.join(ROOT, "tests", "golden", "result-tiny.json"), tmp_path / "result.json")
    # The command line, as a person redraws an old run's page (no plots drawn here).
    done = subprocess.run([sys.executable, "-m", "harness.render.html_report", str(tmp_path / "result.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "report.html")
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert page.images == []
    text = "".join(page.text)
    for name, _ in html_report.PLOTS:
        assert "%s: not drawn" % name in text
    assert page.table("Phase open")  # the tables are there all the same


def test_chromium_renders_it_from_disk_with_every_plot(written, tmp_path):
    from test_dashboard import need_browser, start_chromium

    need_browser()
    path, pngs, _ = written
    driver, stop = start_chromium(tmp_path / "profile")
    try:
        driver.get("file://" + path)
        loaded = driver.execute_script(
            "return [...document.images].map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True] * len(pngs)
        assert driver.find_element("css selector", "h1").text == "Scenario tiny"
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        stop()
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10000
