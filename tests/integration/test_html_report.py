"""The HTML report from the golden result files: it has everything report.md has (every heading,
table row and line), its tables hold the golden numbers, every plot is inlined (one file that
reads offline), and Chromium renders it from disk."""

import base64
import html.parser
import os
import shutil
import subprocess
import sys

import pytest

from harness.analysis import results
from harness.render import html_report, plots, report

from support import ROOT  # noqa: E402
GOLDEN = os.path.join(ROOT, "tests", "golden", "result-tiny.json")
SWEEP = os.path.join(ROOT, "tests", "golden", "result-sweep.json")
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
    assert "Per-worker load, FIFO: worker 0: 21, worker 1: 19" in "".join(page.text)
    cold = {row["strategy"]: row for row in page.table("First invocation after deploy (cold start)")}
    assert cold["RR"]["latency ms"] == "%.1f" % golden["strategies"]["RR"]["cold"]["greet"]["latency_ms"] == "78.4"
    assert cold["RR"]["cold"] == "True" and cold["RR"]["ok"] == "yes"
    deploys = page.table("Deploys")
    assert {(d["function"], d["strategy"], d["lang"], d["ok"]) for d in deploys} == {
        ("greet", "RR", "python", "yes"), ("greet", "FIFO", "python", "yes")}
    text = "".join(page.text)
    assert "throughput (req/s), RR vs FIFO: 33.7 vs 46.1: not significant" in text
    assert "commit 9e0c2fd72909" in text


def test_every_plot_is_inlined_so_the_page_reads_alone(written, tmp_path):
    path, pngs, page = written
    assert len(page.images) == len(pngs) == 5
    drawn = {open(p, "rb").read() for p in pngs}
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1])
        assert data.startswith(PNG_MAGIC) and data in drawn
    assert all(img.get("alt") for img in page.images)
    # Copied anywhere alone, the page still has its plots: it refers to no other file.
    text = open(path, encoding="utf-8").read()
    assert 'src="data:' in text and not any(('src="%s"' % os.path.basename(p)) in text for p in pngs)


@pytest.mark.parametrize("golden_path", [GOLDEN, SWEEP])
def test_the_page_has_everything_report_md_has(golden_path, tmp_path):
    result = results.load(golden_path)
    md = report.render(result)
    page = Page(html_report.render(result, str(tmp_path)))
    text = " ".join("".join(page.text).split())
    for line in md.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "")
            assert title in text, title
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip().replace("`", "").replace("**", "") for c in line.strip("|").split("|")]
            rows = [r for ts in page.tables.values() for t in ts for r in t]
            assert cells in rows, cells
        elif line.startswith("- "):
            plain = " ".join(line[2:].replace("`", "").replace("**", "").split())
            assert plain in text, plain


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
    for name in ("throughput.png", "latency_ccdf.png", "timeline.png", "workers.png"):
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
