"""The console in a real browser (Debian's chromium through its chromedriver, driven by
Selenium; no browser is downloaded): log in, pause an agent and see it paused in the
database and on the page, resume it, a viewer's write refused; a screenshot of each page
under the test's tmp dir. Skipped, saying why, where chromium or chromedriver is missing
(make test installs them when root)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from tests.console_fixture import CLIENT, PASSWORD, ippctl
from tests.helpers import eventually

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="browser tests need Debian's chromium and chromium-driver (make test installs them as root)",
)
#: Where the docs' screenshot comes from (tests/test_console_browser.py writes it there when
#: IPP_CONSOLE_SCREENSHOT is set).
SHOT_ENV = "IPP_CONSOLE_SCREENSHOT"
FAILED_ITEM = Query(
    "t_failed",
    "INSERT INTO psps_item (config, type, item_id, stripe, box, ra, decl, state, attempts, note) "
    "VALUES ('consb', 'P2', 77, 0, 0, 10, 20, 'failed', 3, 'smf unreadable')",
    "test",
)
ITEM_STATE = Query(
    "t_item_state", "SELECT state FROM psps_item WHERE config = 'consb' AND item_id = 77", "test"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _log_in(browser: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/login")
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()


def _row_status(browser: Any, client_id: str) -> str:
    """The status cell of a client's row ("" while the table is being replaced: the page
    refreshes it every 5 s, so an element found a moment ago may be gone)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        rows = browser.find_elements(By.CSS_SELECTOR, f'tr[data-client="{client_id}"] td.status')
        return str(rows[0].text) if rows else ""
    except StaleElementReferenceException:
        return ""


def _click(browser: Any, css: str) -> bool:
    """Click the element, or False if the refresh replaced it meanwhile (then try again)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, css).click()
    except (StaleElementReferenceException, NoSuchElementException):
        return False
    return True


async def test_an_operator_pauses_and_resumes_an_agent_in_the_browser_and_a_viewer_is_refused(
    console, db: Database, spawn, browser, tmp_path, test_dsn
):
    import os

    from selenium.webdriver.common.by import By

    worker = spawn("workload", heartbeat_interval_s=1)
    cid = await eventually(worker.client_id, timeout_s=60, what="the workload agent registered")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.get(f"{console.url}/")
    assert "Log in" in browser.title
    browser.save_screenshot(str(shots / "login.png"))
    _log_in(browser, console.url, "alice")
    await eventually(lambda: "alice (operator)" in browser.page_source, timeout_s=30, what="the overview")
    browser.save_screenshot(str(shots / "overview.png"))
    if os.environ.get(SHOT_ENV):
        browser.save_screenshot(os.environ[SHOT_ENV])
    await eventually(
        lambda: _click(browser, f'form[action="/clients/{cid}/pause"] button'), what="pause clicked"
    )
    await eventually(
        lambda: f"pause: client {cid}" in browser.page_source, timeout_s=30, what="the pause confirmed"
    )
    row = await eventually(lambda: _paused(db, cid), timeout_s=30, what="the client paused in the database")
    assert row["status"] == "paused"
    # the page refreshes its clients table by itself (every 5 s) and shows it paused
    await eventually(
        lambda: _row_status(browser, cid).startswith("paused"), timeout_s=30, what="paused shown"
    )
    browser.save_screenshot(str(shots / "paused.png"))
    await eventually(
        lambda: _click(browser, f'form[action="/clients/{cid}/resume"] button'), what="resume clicked"
    )
    await eventually(lambda: _running(db, cid), timeout_s=30, what="the client running again")
    await eventually(
        lambda: _row_status(browser, cid).startswith("running"), timeout_s=30, what="running shown"
    )
    # a loading config made and edited in the browser is what ippctl reads
    browser.get(f"{console.url}/loading/new?name=consb")
    field = browser.find_element(By.ID, "f-min_ra")
    field.clear()
    field.send_keys("9.5")
    browser.save_screenshot(str(shots / "config.png"))
    browser.find_element(By.ID, "save").click()
    await eventually(
        lambda: "config consb saved" in browser.page_source, timeout_s=30, what="the config saved"
    )
    listed = ippctl(test_dsn, "psps", "config", "list", "--json")
    assert [c["min_ra"] for c in json.loads(listed.stdout) if c["name"] == "consb"] == [9.5]
    # a failed item queued again
    await db.execute(FAILED_ITEM)
    browser.find_element(By.CSS_SELECTOR, 'form[action="/loading/consb/requeue"] button').click()
    await eventually(
        lambda: "consb: 1 failed items queued again" in browser.page_source, timeout_s=30, what="requeue"
    )
    assert await db.fetch_val(ITEM_STATE) == "new"
    browser.save_screenshot(str(shots / "loading.png"))
    # a form without its CSRF token is refused
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "document.body.appendChild(f); f.submit();",
        f"/clients/{cid}/stop",
    )
    await eventually(
        lambda: "CSRF token is missing or wrong" in browser.page_source, timeout_s=30, what="403"
    )
    browser.get(f"{console.url}/audit")
    assert "client_pause" in browser.page_source and "client_resume" in browser.page_source
    browser.save_screenshot(str(shots / "audit.png"))
    # a viewer sees the same clients, has no buttons, and a forged write is refused (403)
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    _log_in(browser, console.url, "vic")
    await eventually(
        lambda: "vic (viewer)" in browser.page_source, timeout_s=30, what="the viewer's overview"
    )
    assert cid in browser.page_source
    assert not browser.find_elements(By.CSS_SELECTOR, f'form[action="/clients/{cid}/pause"]')
    csrf = browser.find_element(By.CSS_SELECTOR, 'header input[name="csrf"]').get_attribute("value")
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.name = 'csrf'; i.value = arguments[1];"
        "f.appendChild(i); document.body.appendChild(f); f.submit();",
        f"/clients/{cid}/stop",
        csrf,
    )
    await eventually(lambda: "refused: a viewer may not" in browser.page_source, timeout_s=30, what="403")
    browser.save_screenshot(str(shots / "viewer_refused.png"))
    row = await db.fetch_one(CLIENT, id=cid)
    assert row is not None and row["command"] == "resume"
    assert sorted(p.name for p in shots.iterdir()) == [
        "audit.png", "config.png", "loading.png", "login.png", "overview.png", "paused.png",
        "viewer_refused.png",
    ]  # fmt: skip


async def _paused(db: Database, client_id: str) -> Any:
    row = await db.fetch_one(CLIENT, id=client_id)
    return row if row and row["status"] == "paused" else None


async def _running(db: Database, client_id: str) -> bool:
    row = await db.fetch_one(CLIENT, id=client_id)
    return row is not None and row["status"] == "running"
