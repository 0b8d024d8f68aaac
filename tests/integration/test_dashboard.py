"""The web dashboard in a real headless Chromium (Selenium, Debian's chromium and chromedriver)
against a real stack: deploy from the form, invoke from the panel, see the output and workers."""

import os
import re
import shutil
import signal

import pytest
from support import EXAMPLES, http, invoke

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
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    reason = None
    if missing:
        reason = "no headless browser: %s missing (apt-get install chromium chromium-driver)" % ", ".join(missing)
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium is not installed (pip install selenium)"
    if reason:
        if os.environ.get("FAAS_REQUIRE_TOOLCHAINS") == "1":
            pytest.fail(reason + " (required: FAAS_REQUIRE_TOOLCHAINS=1)")
        pytest.skip(reason)


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


def test_upload_a_file_and_the_live_chart_sees_the_load(page, shared_stack):
    result = deploy_from_form(page, None, upload=EXAMPLES / "greet.py")
    assert "Deployed greet" in result.text, result.text
    status, meta, _ = http("GET", shared_stack.url + "/function/greet")
    assert meta["lang"] == "python" and meta["code"] == (EXAMPLES / "greet.py").read_text()
    # Load from outside the page; the live figures are computed by the page from /metrics.
    for _ in range(20):
        assert invoke(shared_stack.url, "greet", "load")[0] == 200

    def live(d):  # both figures of one poll, once a poll has seen the load
        figures = d.execute_script("return [document.getElementById('live-rps').textContent,"
                                   " document.getElementById('live-latency').textContent]")
        return figures if figures[0] not in ("–", "0.0") else None

    rps, latency = wait_for(page, live)
    assert float(rps) > 0 and float(latency) > 0
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
