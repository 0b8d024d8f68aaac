"""The web dashboard in a real headless Chromium (Selenium, Debian's chromium and chromedriver)
against a real stack: deploy from the form, invoke from the panel, see the output and workers;
a function's panel (versions, update, delete, its invocations and errors), the live charts'
time axis and p99, the loading state in screenshots, the name check and the favicon."""

import os
import re
import shutil
import signal
import urllib.request

import pytest
from needs import missing
from support import EXAMPLES, deploy, http, invoke

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WAIT_S = 30  # a generous deadline, not a timing assertion: a loaded machine may be slow

ECHO = """import sys
data = sys.stdin.read()
print("echo:", data)
print("said", len(data), "chars", file=sys.stderr)
"""


def need_browser():
    """Skip (or fail when FAAS_REQUIRE_TOOLCHAINS=1) without the browser or selenium."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    reason = None
    if absent:
        reason = "no headless browser: %s missing (apt-get install chromium chromium-driver)" % ", ".join(absent)
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium is not installed (pip install selenium)"
    if reason:
        missing(reason)


def start_chromium(profile_dir):
    """(driver, stop): headless Chromium under chromedriver, the driver in its own session so
    stop() can end whatever it started. Call need_browser() first."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(flag)
    options.add_argument("--user-data-dir=%s" % profile_dir)
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    pgid = os.getpgid(service.process.pid)

    def stop():
        try:
            driver.quit()
        finally:
            try:
                os.killpg(pgid, signal.SIGKILL)  # any chromium quit() left behind
            except ProcessLookupError:
                pass

    return driver, stop


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module."""
    need_browser()
    driver, stop = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        stop()


@pytest.fixture(scope="module")
def page(browser, shared_stack):
    """The dashboard of the shared stack, loaded once its language list has arrived."""
    browser.get(shared_stack.url + "/")
    wait_for(browser, lambda d: d.find_elements("css selector", "#deploy-lang option[value=python]"))
    return browser


def wait_for(driver, condition, message="the dashboard did not get there"):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    # The page redraws its tables on every poll, so an element found may be gone when read.
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(condition, message)


def text(driver, css):
    """The rendered text of the first element matching `css`, read in one step (see wait_for)."""
    return driver.execute_script("return document.querySelector(arguments[0]).innerText.trim()", css)


def texts(driver, css):
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim())", css)


def deploy_from_form(driver, name, code=None, upload=None):
    from selenium.webdriver.support.ui import Select
    form = driver.find_element("id", "deploy-form")
    driver.find_element("id", "deploy-name").clear()
    driver.find_element("id", "deploy-code").clear()
    if upload:
        driver.find_element("id", "deploy-file").send_keys(str(upload))
        wait_for(driver, lambda d: d.find_element("id", "deploy-code").get_attribute("value"))
    else:
        driver.find_element("id", "deploy-name").send_keys(name)
        Select(driver.find_element("id", "deploy-lang")).select_by_value("python")
        driver.find_element("id", "deploy-code").send_keys(code)
    before = driver.find_element("id", "deploy-result").text
    form.find_element("css selector", "button").click()
    wait_for(driver, lambda d: d.find_element("id", "deploy-result").text not in ("", before))
    return driver.find_element("id", "deploy-result")


def test_the_page_and_its_files_are_served_with_nothing_from_the_internet(shared_stack):
    status, html, headers = http("GET", shared_stack.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert "/static/dashboard.js" in assets and "/static/dashboard.css" in assets
    for asset in assets:
        status, body, headers = http("GET", shared_stack.url + asset)
        assert status == 200, asset
        assert not re.search(r"https?://", body), "%s fetches from outside the gateway" % asset
    assert not re.search(r'(?:src|href)="https?://', html)
    status, body, _ = http("GET", shared_stack.url + "/static/missing.js")
    assert status == 404


def test_deploy_from_the_form_then_invoke_and_see_output_and_workers(page, shared_stack, tmp_path):
    result = deploy_from_form(page, "echo", code=ECHO)
    assert "Deployed echo" in result.text, result.text
    assert "ok" in result.get_attribute("class").split()
    wait_for(page, lambda d: texts(d, "#functions tr[data-name=echo]"))
    row = text(page, "#functions tr[data-name=echo]")
    assert "python" in row and "%d B" % len(ECHO) in row
    # The API agrees with what the page says it deployed.
    status, meta, _ = http("GET", shared_stack.url + "/function/echo")
    assert status == 200 and meta["code"] == ECHO and meta["lang"] == "python"

    from selenium.webdriver.support.ui import Select
    Select(page.find_element("id", "invoke-fn")).select_by_value("echo")
    page.find_element("id", "invoke-input").send_keys("from the browser")
    page.find_element("id", "invoke-button").click()
    wait_for(page, lambda d: d.find_element("id", "invoke-output").text)
    assert text(page, "#invoke-output") == "echo: from the browser"
    assert text(page, "#invoke-stderr") == "said 16 chars"
    facts = text(page, "#invoke-facts")
    assert re.search(r"exit code\s+0", facts) and re.search(r"HTTP status\s+200", facts)
    assert re.search(r"total ms\s+\d+\.\d\d", facts) and re.search(r"worker\s+\d", facts)
    assert page.find_element("id", "invoke-error").is_displayed() is False

    # The workers of the stack (2) with a state, as GET /stats has them.
    wait_for(page, lambda d: len(texts(d, "#workers tbody tr")) == 2)
    states = texts(page, "#workers tbody .badge")
    assert set(states) <= {"idle", "busy", "starting", "retiring"} and len(states) == 2
    pids = {str(w["pid"]) for w in http("GET", shared_stack.url + "/stats")[1]["workers"]}
    assert set(texts(page, "#workers tbody td:nth-child(2)")) == pids

    # The functions table catches up with the invocation: its count and latency.
    wait_for(page, lambda d: texts(d, "#functions tr[data-name=echo] td:nth-child(6)") == ["1"])
    assert re.fullmatch(r"\d+\.\d", text(page, "#functions tr[data-name=echo] td:nth-child(7)"))

    shot = tmp_path / "dashboard.png"
    page.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10000


def largest(driver, key):
    """The largest value of one of the page's live series (rps, p99, latency), or None."""
    return driver.execute_script(
        "const v = series[arguments[0]].map((p) => p.value).filter((v) => v !== null);"
        "return v.length ? Math.max(...v) : null;", key) or None


def test_upload_a_file_and_the_live_chart_sees_the_load(page, shared_stack):
    result = deploy_from_form(page, None, upload=EXAMPLES / "greet.py")
    assert "Deployed greet" in result.text, result.text
    status, meta, _ = http("GET", shared_stack.url + "/function/greet")
    assert meta["lang"] == "python" and meta["code"] == (EXAMPLES / "greet.py").read_text()
    # Load from outside the page; the live figures are computed by the page from /metrics.
    for _ in range(20):
        assert invoke(shared_stack.url, "greet", "load")[0] == 200

    # A poll's figures are shown until the next poll; its points stay in the charts' series.
    rps, latency = wait_for(page, lambda d: largest(d, "rps") and largest(d, "latency")
                            and (largest(d, "rps"), largest(d, "latency")))
    assert rps > 0 and latency > 0
    assert "/metrics" in text(page, "#live-source")


def test_errors_are_the_api_sentence(page):
    result = deploy_from_form(page, "echo", code=ECHO)
    assert "function name 'echo' already exists, please choose another name" in result.text
    assert "bad" in result.get_attribute("class").split()
    # Python is parsed at deploy: a syntax error is the 422's sentence, in the form's error style.
    result = deploy_from_form(page, "broken", code="def (:\n")
    assert "syntax error in the python code" in result.text and "SyntaxError" in result.text
    assert "bad" in result.get_attribute("class").split()
    result = deploy_from_form(page, "failing", code='import sys\nprint("boom", file=sys.stderr)\nsys.exit(3)\n')
    assert "Deployed failing" in result.text

    from selenium.webdriver.support.ui import Select
    Select(page.find_element("id", "invoke-fn")).select_by_value("failing")
    page.find_element("id", "invoke-button").click()
    wait_for(page, lambda d: d.find_element("id", "invoke-error").is_displayed())
    assert re.search(r"exit code\s+3", text(page, "#invoke-facts"))
    assert "boom" in text(page, "#invoke-stderr")
    assert text(page, "#invoke-error")  # the API's sentence, whatever its wording


def test_a_gateway_with_an_api_key_gets_it_from_the_form(browser, start_stack):
    stack = start_stack(workers=1, extra_args=["--api-key", "s3cret"])
    browser.get(stack.url + "/")
    wait_for(browser, lambda d: d.find_elements("css selector", "#deploy-lang option[value=python]"))
    result = deploy_from_form(browser, "keyed", code=ECHO)
    assert "missing or wrong API key" in result.text
    browser.find_element("id", "api-key").send_keys("s3cret")
    result = deploy_from_form(browser, "keyed", code=ECHO)
    assert "Deployed keyed" in result.text, result.text
    # Reading code needs the key too: the page sends it, a client without it is refused.
    wait_for(browser, lambda d: texts(d, "#functions tr[data-name=keyed]"))
    assert http("GET", stack.url + "/function/keyed")[0] == 401
    assert http("GET", stack.url + "/function/keyed", headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_the_page_itself_passes_the_origin_check_and_a_run_page_cannot_deploy(page, shared_stack):
    """The dashboard's requests are same-origin (Chromium sends its Origin and Sec-Fetch-Site),
    so they pass; an HTML function's page runs sandboxed (an opaque origin: Origin null), so
    its script's write is refused."""
    url = shared_stack.url
    attack = ("<p id=done>waiting</p><script>fetch('/deploy?name=from-run-page&lang=python', "
              "{method: 'POST', body: 'print(1)'}).then(r => { document.getElementById('done')"
              ".textContent = 'status ' + r.status; }).catch(e => { document.getElementById('done')"
              ".textContent = 'failed ' + e; });</script>")
    status, body, _ = http("POST", url + "/deploy?name=attack-page&lang=html", attack)
    assert status == 201, body
    page.get(url + "/run/attack-page")
    wait_for(page, lambda d: d.find_element("id", "done").text != "waiting")
    assert http("GET", url + "/function/from-run-page")[0] == 404
    # Back on the dashboard, its own deploy works (the same-origin path, end to end).
    page.get(url + "/")
    wait_for(page, lambda d: d.find_elements("css selector", "#deploy-lang option[value=python]"))
    result = deploy_from_form(page, "same-origin", code=ECHO)
    assert "Deployed same-origin" in result.text, result.text


# -- issue 19: favicon, loading state, name checking, the function panel, the live charts ----

NAME_SAMPLES = ["a", "hello", "a-b_c", "9lives", "A" * 64, "A" * 65, "-x", "_x", "x y", "a.b", "a/b",
                "é", "x\u00e9", "", "x-", "x_", "[x]", "a|b", "a\\b"]


def test_favicon_is_an_icon(shared_stack):
    status, body, headers = http("GET", shared_stack.url + "/favicon.ico")
    assert status == 200 and headers["Content-Type"].startswith("image/"), (status, headers)
    with urllib.request.urlopen(shared_stack.url + "/favicon.ico", timeout=30) as r:
        assert r.read(4) == b"\0\0\1\0"   # an ICO file's header
    status, html, _ = http("GET", shared_stack.url + "/")
    assert 'rel="icon" href="/favicon.ico"' in html


def test_the_page_starts_as_loading_not_as_an_answer(shared_stack):
    """Before its first answers the page says "loading", never "no function" nor "checking"."""
    status, html, _ = http("GET", shared_stack.url + "/")
    assert status == 200
    tbody = re.search(r'<table id="functions">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert "loading" in tbody and "no function" not in tbody
    assert "checking" not in html


def test_the_name_pattern_is_valid_in_chromium_and_agrees_with_the_server(page, shared_stack):
    from reference.functions.storage import NAME_RE
    pattern = page.find_element("id", "deploy-name").get_attribute("pattern")
    # The pattern attribute is compiled with the v flag; an invalid one disables the check.
    error = page.execute_script(
        "try { new RegExp('^(?:' + arguments[0] + ')$', 'v'); return null; } catch (e) { return String(e); }", pattern)
    assert error is None, error
    verdicts = page.execute_script("""
        const input = document.getElementById('deploy-name');
        const before = input.value;
        const out = arguments[0].map((name) => { input.value = name; return input.checkValidity(); });
        input.value = before;
        return out;""", NAME_SAMPLES)
    expected = [bool(NAME_RE.fullmatch(name)) for name in NAME_SAMPLES]
    assert dict(zip(NAME_SAMPLES, verdicts)) == dict(zip(NAME_SAMPLES, expected))
    # An invalid name is stopped in the page: no deploy is sent.
    page.find_element("id", "deploy-name").clear()
    page.find_element("id", "deploy-name").send_keys("bad name!")
    page.find_element("id", "deploy-code").clear()
    page.find_element("id", "deploy-code").send_keys("print(1)")
    before = text(page, "#deploy-result")
    page.find_element("id", "deploy-button").click()
    assert page.execute_script("return document.getElementById('deploy-name').validity.patternMismatch") is True
    assert text(page, "#deploy-result") == before
    assert "bad name!" not in [f["name"] for f in http("GET", shared_stack.url + "/functions")[1]["functions"]]
    page.find_element("id", "deploy-name").clear()


def table_state(driver):
    """What the functions table shows right now: "loading", "none", or the names listed."""
    return driver.execute_script("""
        const body = document.querySelector('#functions tbody');
        if (body.querySelector('tr.loading')) return 'loading';
        if (body.querySelector('tr.empty')) return 'none: ' + body.innerText.trim();
        return [...body.querySelectorAll('tr[data-name]')].map((r) => r.dataset.name);""")


def test_screenshots_show_loading_then_the_functions_never_none(browser, start_stack, tmp_path):
    stack = start_stack(workers=1)
    browser.get(stack.url + "/")
    wait_for(browser, lambda d: table_state(d) == "none: no function deployed yet")
    names = sorted("page-%02d" % i for i in range(22))
    for name in names:
        deploy(stack.url, name, "html", b"<p>%s</p>" % name.encode())
    assert sorted(f["name"] for f in http("GET", stack.url + "/functions")[1]["functions"]) == names

    browser.get(stack.url + "/")
    seen = [table_state(browser)]
    first = tmp_path / "first.png"
    browser.save_screenshot(str(first))
    seen.append(table_state(browser))
    badge = text(browser, "#health")
    assert first.read_bytes().startswith(PNG_MAGIC)
    # Around the first screenshot: loading, or the functions; never "none", never "checking".
    for state in seen:
        assert state == "loading" or sorted(state) == names, seen
    assert badge in ("loading…", "healthy"), badge

    wait_for(browser, lambda d: table_state(d) == names)
    shot = tmp_path / "functions.png"
    browser.save_screenshot(str(shot))
    assert table_state(browser) == names, "the screenshot was taken without the functions"
    assert text(browser, "#health") == "healthy"
    rows = browser.find_element("id", "functions").size["height"]
    assert rows > 22 * 15, "22 rows should make the table tall: %s px" % rows
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10000


PANEL_V1 = 'print("v1")\n'
PANEL_V2 = """import sys
data = sys.stdin.read()
print("v2", data)
if data == "fail":
    print("asked to fail", file=sys.stderr)
    sys.exit(4)
"""
PANEL_V3 = 'print("v3")\n'


def panel_rows(driver, table):
    """The rows of a table of the function panel, as lists of cell texts."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr:not(.empty)')]"
        ".map((r) => [...r.cells].map((c) => c.innerText.trim()))", table)


def test_the_function_panel_versions_invocations_errors_update_delete(page, shared_stack):
    from selenium.webdriver.common.keys import Keys
    url = shared_stack.url
    deploy(url, "panel", "python", PANEL_V1.encode())
    status, answer, _ = http("PUT", url + "/function/panel", PANEL_V2)
    assert status == 200 and answer["version"] == 2, answer
    assert invoke(url, "panel", "fine")[0] == 200
    status, failed, _ = invoke(url, "panel", "fail")
    assert status == 500 and failed["exit_code"] == 4, failed

    # The functions table links to the panel.
    page.get(url + "/")
    wait_for(page, lambda d: d.find_elements("css selector", "#functions tr[data-name=panel] a.fn-link"))
    page.find_element("css selector", "#functions tr[data-name=panel] a.fn-link").click()
    wait_for(page, lambda d: len(panel_rows(d, "#fn-versions")) == 2)
    assert page.find_element("id", "function-panel").is_displayed()
    assert text(page, "#fn-name") == "panel" and "version 2" in text(page, "#fn-summary")
    versions = panel_rows(page, "#fn-versions")
    assert [v[0] for v in versions] == ["2", "1"] and versions[0][3] == "current", versions
    assert page.find_element("id", "fn-code").get_attribute("value") == PANEL_V2

    # Its last invocations, newest first, and the failed one among its errors.
    wait_for(page, lambda d: len(panel_rows(d, "#fn-invocations")) == 2)
    calls = panel_rows(page, "#fn-invocations")
    assert [(c[1], c[2], c[7]) for c in calls] == [("2", "500", "4"), ("2", "200", "0")], calls
    assert re.fullmatch(r"\d\d:\d\d:\d\d", calls[0][0]), calls[0]
    errors = panel_rows(page, "#fn-errors")
    assert len(errors) == 1 and errors[0][1:3] == ["2", "500"] and errors[0][4] == "4", errors
    assert errors[0][3] == failed["kind"]

    # Update from the panel: a new version on the server, listed in the panel.
    box = page.find_element("id", "fn-code")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(PANEL_V3)
    page.find_element("id", "fn-update").click()
    wait_for(page, lambda d: "Updated panel to version 3" in d.find_element("id", "fn-result").text)
    status, meta, _ = http("GET", url + "/function/panel")
    assert status == 200 and meta["version"] == 3 and meta["code"] == PANEL_V3, meta
    assert [v["version"] for v in meta["versions"]] == [3, 2, 1]
    wait_for(page, lambda d: [v[0] for v in panel_rows(d, "#fn-versions")] == ["3", "2", "1"])
    status, answer, _ = invoke(url, "panel", "")
    assert status == 200 and answer["output"] == "v3\n", answer
    wait_for(page, lambda d: [c[1:3] for c in panel_rows(d, "#fn-invocations")][:1] == [["3", "200"]])

    # Delete, after a confirmation: gone from the server and from the functions table.
    page.find_element("id", "fn-delete").click()
    wait_for(page, lambda d: d.find_element("id", "fn-delete-yes").is_displayed())
    assert http("GET", url + "/function/panel")[0] == 200   # nothing happens before the confirmation
    page.find_element("id", "fn-delete-yes").click()
    wait_for(page, lambda d: "Deleted panel" in d.find_element("id", "fn-result").text)
    assert http("GET", url + "/function/panel")[0] == 404
    wait_for(page, lambda d: not d.find_elements("css selector", "#functions tr[data-name=panel]"))
    assert "deleted" in text(page, "#fn-state")
    page.find_element("id", "fn-close").click()
    wait_for(page, lambda d: not d.find_element("id", "function-panel").is_displayed())


def test_the_live_charts_have_a_time_axis_and_a_p99(page, shared_stack):
    url = shared_stack.url
    if http("GET", url + "/function/greet")[0] == 404:
        deploy(url, "greet", "python", EXAMPLES / "greet.py")
    page.get(url + "/")
    wait_for(page, lambda d: d.find_element("id", "live-source").text != "loading…")
    for _ in range(10):
        assert invoke(url, "greet", "chart")[0] == 200

    p99 = wait_for(page, lambda d: largest(d, "p99"))
    mean = largest(page, "latency")
    assert p99 > 0 and mean > 0
    assert re.fullmatch(r"–|\d+\.\d", text(page, "#live-p99"))
    # The page's own p99 arithmetic, on a histogram whose answer is known.
    assert page.execute_script("return histogramQuantile([[0.01, 0], [0.1, 100], [Infinity, 100]], 0.5)") == \
        pytest.approx(0.055)
    assert page.execute_script("return histogramQuantile([[0.01, 0], [Infinity, 5]], 0.99)") == 0.01
    assert page.execute_script("return histogramQuantile([[0.01, 0], [Infinity, 0]], 0.99)") is None
    # Both charts are drawn with their time axis (ticks labelled in seconds ago, up to "now").
    assert "minutes" in text(page, "#live-source")
    for canvas, unit in (("chart-rps", "req/s"), ("chart-latency", "ms")):
        axis = page.execute_script("return document.getElementById(arguments[0]).dataset.axis", canvas)
        assert axis == "now, -30 s, -60 s, -90 s, -120 s (seconds ago); " + unit, axis
    for canvas in ("chart-rps", "chart-latency"):
        drawn = page.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let inked = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) inked++; return inked;", canvas)
        assert drawn > 500, canvas
