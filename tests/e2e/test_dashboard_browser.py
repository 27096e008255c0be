"""The operator dashboard in a real browser: headless Chromium (Debian's `chromium`
and `chromium-driver`) driven by selenium, against a real gateway process and the
simulators. One browser and one gateway for the module; screenshots of each page
go to tests/artifacts/screenshots/.

Chromium is taken from /usr/bin (or PATH), else installed with apt-get when the
tests run as root; if neither works the tests fail, they never skip silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.sim.catalog import DEFAULT_CATALOG
from harness import ROOT, Gateway, Sim, base_config

ADMIN = "browser-admin-key-0123456789"
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def obtain_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) from /usr/bin or PATH, else apt-get install them as root."""
    def find() -> tuple[str | None, str | None]:
        return (shutil.which("chromium", path="/usr/bin:" + os.environ.get("PATH", "")),
                shutil.which("chromedriver", path="/usr/bin:" + os.environ.get("PATH", "")))

    browser, driver = find()
    if (browser is None or driver is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
                       env=env, capture_output=True)
        browser, driver = find()
    if browser is None or driver is None:
        pytest.fail("the dashboard's browser tests need Debian's chromium and chromium-driver:"
                    " install them, or run the tests as root so they can apt-get install them")
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, chromedriver = obtain_chromium()
    profile = tempfile.mkdtemp(prefix="gw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def dash(sims: tuple[Sim, Sim], redis_base: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, admin_key=ADMIN, catalog_ttl_s=1, max_rate_change="0.5")
    gw = Gateway(config, _own_database(redis_base), tmp_path_factory.mktemp("dash"))
    try:
        yield gw
    finally:
        gw.stop()
        a.reset()
        b.reset()


def _own_database(redis_base: str) -> str:
    """A database handed out by tests/conftest.py (as `fresh_redis` does), for the module."""
    shared = next(m for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) == str(ROOT / "tests" / "conftest.py"))
    url: str = shared.with_db(redis_base, next(shared._dbs))
    return url


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.port}"


def admin_api(gw: Gateway, path: str) -> Any:
    r = httpx.get(f"{base(gw)}/admin/api{path}", headers={"Authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()


def wait_for(check: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def text(driver: WebDriver, css: str, until: Callable[[str], bool] | None = None,
         seconds: float = 5) -> str:
    """The text of the first element matching `css` once there (and once `until` holds):
    a click that loads a new page is waited for here."""
    def read() -> str | None:
        try:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            value = found[0].text if found else None
        except StaleElementReferenceException:
            return None
        if value is None or (until is not None and not until(value)):
            return None
        return str(value)

    return str(wait_for(read, seconds))


def heading(driver: WebDriver, expected: str) -> None:
    text(driver, "h1", until=lambda t: t == expected)


def click_and_accept(driver: WebDriver, css: str) -> None:
    """Click a button whose form asks first (data-confirm) and say yes."""
    driver.find_element(By.CSS_SELECTOR, css).click()

    def accepted() -> bool:
        try:
            driver.switch_to.alert.accept()
        except NoAlertPresentException:
            return False
        return True

    wait_for(accepted, 5)


@pytest.fixture(scope="module")
def logged_in(browser: WebDriver, dash: Gateway) -> WebDriver:
    browser.get(f"{base(dash)}/admin/")
    assert browser.current_url.endswith("/admin/login"), "a page without a session: login"
    shot(browser, "login")
    browser.find_element(By.ID, "key").send_keys(ADMIN)
    browser.find_element(By.ID, "login").click()
    heading(browser, "Overview")
    cookie = browser.get_cookie("gw_admin")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    shot(browser, "overview")
    return browser


def test_log_in_and_see_every_page(logged_in: WebDriver, dash: Gateway) -> None:
    for page, title in (("providers", "Providers"), ("orders", "Orders"),
                          ("catalog", "Catalog"), ("clients", "Clients")):
        logged_in.find_element(By.ID, f"nav-{page}").click()
        heading(logged_in, title)
        shot(logged_in, page)
        if page == "providers":
            rows = logged_in.find_elements(By.CSS_SELECTOR, "#providers tbody tr")
            assert [r.text.split()[0] for r in rows] == ["prov-a", "prov-b"]
    logged_in.find_element(By.ID, "nav-overview").click()
    heading(logged_in, "Overview")
    assert len(logged_in.find_elements(By.CSS_SELECTOR, "#chart-orders svg rect")) == 7


def test_an_order_shows_on_the_orders_page_with_its_margin(logged_in: WebDriver,
                                                          dash: Gateway) -> None:
    order = dash.call(action="add", service=2, link="https://tiktok.com/@browser",
                      quantity=1000)["order"]
    expected = admin_api(dash, f"/orders/{order}")
    assert expected["margin"] not in ("0.00000", None)
    logged_in.find_element(By.ID, "nav-orders").click()
    heading(logged_in, "Orders")
    row = f"#order-{order}"
    assert text(logged_in, f"{row} td.margin") == expected["margin"]
    assert "https://tiktok.com/@browser" in text(logged_in, row)
    logged_in.find_element(By.ID, "q").send_keys("@browser")
    logged_in.find_element(By.ID, "search-button").click()
    wait_for(lambda: "q=%40browser" in logged_in.current_url)
    assert len(logged_in.find_elements(By.CSS_SELECTOR, "#orders tbody tr")) == 1
    logged_in.find_element(By.LINK_TEXT, str(order)).click()
    heading(logged_in, f"Order {order}")
    assert text(logged_in, "#margin") == expected["margin"]
    assert text(logged_in, "#charge") == expected["charge"]
    shot(logged_in, "order")


def test_resolve_an_unknown_order_by_clicking(logged_in: WebDriver, dash: Gateway,
                                              sims: tuple[Sim, Sim]) -> None:
    a, b = sims
    for sim in (a, b):
        sim.control("fault", {"fault": "drop", "rate": 1.0, "action": "add"})
    try:
        answer = dash.call(action="add", service=1, link="https://tiktok.com/@lost",
                           quantity=100)
    finally:
        for sim in (a, b):
            sim.control("fault", {"fault": None})
    assert "could not be confirmed" in answer["error"]
    order = admin_api(dash, "/overview")["unknown"][0]["order"]
    logged_in.find_element(By.ID, "nav-overview").click()
    heading(logged_in, "Overview")
    logged_in.find_element(By.LINK_TEXT, str(order)).click()
    heading(logged_in, f"Order {order}")
    assert text(logged_in, "#state") == "unknown"
    shot(logged_in, "order-unknown")
    click_and_accept(logged_in, "#resolve-not-placed")
    assert "marked not placed" in text(logged_in, "#flash")
    text(logged_in, "#state", until=lambda t: t == "failed")
    assert not logged_in.find_elements(By.ID, "resolve")
    shot(logged_in, "order-resolved")
    assert admin_api(dash, "/overview")["unknown_orders"] == 0
    assert admin_api(dash, "/audit")["audit"][0] | {"action": "resolve", "ok": True} == \
        admin_api(dash, "/audit")["audit"][0]


def test_confirm_a_held_rate_by_clicking(logged_in: WebDriver, dash: Gateway,
                                         sims: tuple[Sim, Sim]) -> None:
    a, _ = sims
    jumped = [dict(s, rate="30.00") if s["service"] == 5 else dict(s) for s in DEFAULT_CATALOG]
    a.control("catalog", {"services": jumped})

    def held() -> bool:
        services = admin_api(dash, "/catalog")["services"]
        return bool(next(s for s in services if s["id"] == 8)["held"])

    wait_for(held, 15)
    logged_in.find_element(By.ID, "nav-catalog").click()
    heading(logged_in, "Catalog")
    assert "4.50000" in text(logged_in, "#held-8")
    shot(logged_in, "catalog-held")
    click_and_accept(logged_in, "#confirm-8")
    assert "will be advertised" in text(logged_in, "#flash")
    assert not logged_in.find_elements(By.ID, "held-8")
    assert "45.00000" in text(logged_in, "#service-8 h3")
    shot(logged_in, "catalog-confirmed")
    rates = {s["service"]: s["rate"] for s in dash.call(action="services")}
    assert rates[8] == "45.00000"
    logged_in.find_element(By.ID, "nav-overview").click()
    heading(logged_in, "Overview")
    # the module's gateway may have taken orders in other tests (on this worker or not)
    overview = admin_api(dash, "/overview")
    assert text(logged_in, "[data-k='today.orders']") == str(overview["today"]["orders"])
    assert text(logged_in, "[data-k='unknown_orders']") == str(overview["unknown_orders"])
    shot(logged_in, "overview-after")


def test_explain_a_route_with_the_catalog_form(logged_in: WebDriver, dash: Gateway) -> None:
    """The Catalog page's route form: service, quantity and client in, the candidates
    out as a table, the one marked TAKEN the one /admin/api/route names."""
    expected = admin_api(dash, "/route?service=1&quantity=100&client=alice")
    assert expected["taken"] is not None
    logged_in.find_element(By.ID, "nav-catalog").click()
    heading(logged_in, "Catalog")
    for field, value in (("route-service", "1"), ("route-quantity", "100"),
                         ("route-client", "alice")):
        box = logged_in.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    logged_in.find_element(By.ID, "route-submit").click()
    wait_for(lambda: "quantity=100" in logged_in.current_url)
    taken = text(logged_in, "#route-table tr.pick", until=lambda t: "TAKEN" in t)
    assert taken.split()[0] == expected["taken"]
    rows = logged_in.find_elements(By.CSS_SELECTOR, "#route-table tbody tr")
    assert len(rows) == len(expected["candidates"]) + len(expected["unlisted"])
    assert "for alice" in text(logged_in, "#route-result p")
    logged_in.execute_script("document.getElementById('route').scrollIntoView()")
    shot(logged_in, "catalog-route")
