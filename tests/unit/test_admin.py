"""The operator dashboard's HTTP side, in-process over a real Redis: off without an
admin key, the bearer key on /admin/api/, order search and money, resolve, confirm,
client keys, and the pages' session cookie and CSRF token."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from gateway.config import check_text
from gateway.ops.explain import route as ops_route
from inprocess import ALICE, App, config_text, upstream_key
from upstream import HttpStatus, Reject, Unreachable

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
pytestmark = pytest.mark.anyio
with_admin = pytest.mark.gateway(admin_key=ADMIN)


async def api(app: App, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    return await app.http.request(method, "/admin/api" + path, json=body,
                                  headers=AUTH if headers is None else headers)


def is_json_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message: str = r.json()["error"]
    return message


async def test_off_without_an_admin_key(app: App) -> None:
    for path in ("/admin/", "/admin", "/admin/login", "/admin/api/overview"):
        r = await app.http.get(path, headers=AUTH)
        assert is_json_error(r, 404) == "Not Found"
    assert is_json_error(await app.http.post("/admin/api/clients", headers=AUTH), 404)


@with_admin
async def test_the_api_needs_the_bearer_key(app: App) -> None:
    assert "Bearer" in is_json_error(await api(app, "GET", "/overview", headers={}), 401)
    wrong = {"Authorization": "Bearer not-the-key-at-all-000"}
    assert is_json_error(await api(app, "GET", "/overview", headers=wrong), 401)
    assert is_json_error(await api(app, "POST", "/clients", {"name": "x"}, headers=wrong), 401)
    client_key = {"Authorization": f"Bearer {ALICE}"}
    assert is_json_error(await api(app, "GET", "/clients", headers=client_key), 401)
    r = await api(app, "GET", "/overview")
    assert r.status_code == 200 and r.json()["unknown_orders"] == 0


@with_admin
async def test_too_many_wrong_keys_are_refused_for_a_while(app: App) -> None:
    wrong = {"Authorization": "Bearer not-the-key-at-all-000"}
    for _ in range(10):
        is_json_error(await api(app, "GET", "/overview", headers=wrong), 401)
    assert "Too many" in is_json_error(await api(app, "GET", "/overview"), 429)


def test_a_short_admin_key_is_a_config_error() -> None:
    settings, problems = check_text(config_text(admin_key="short"), "gw.yaml", env={})
    assert settings is None and "admin_key must be at least 16 characters" in problems[0]
    settings, problems = check_text(config_text(admin_key="${ADMIN_KEY}"), "gw.yaml",
                                    env={"ADMIN_KEY": ADMIN})
    assert settings is not None and settings.gateway.admin_key == ADMIN


@with_admin
async def test_search_an_order_and_its_money(app: App) -> None:
    order = (await app.call(action="add", service=1, link="https://tiktok.com/@me",
                            quantity=100))["order"]
    await app.call(action="add", service=2, link="https://tiktok.com/@other", quantity=100)
    for query in (f"q={order}", "q=@me", "client=alice&q=tiktok.com/@me", "q=9001",
                  "provider=prov-a&status=placed&q=@me"):
        found = (await api(app, "GET", f"/orders?{query}")).json()
        assert [o["order"] for o in found["orders"]] == [order], query
    assert len((await api(app, "GET", "/orders?client=alice")).json()["orders"]) == 2
    assert (await api(app, "GET", "/orders?client=bob")).json()["orders"] == []
    detail = (await api(app, "GET", f"/orders/{order}")).json()
    # rate 0.50 x markup 1.5 = 0.75 per 1000; cost 0.50 per 1000
    assert detail | {"charge": "0.07500", "cost": "0.05000", "margin": "0.02500"} == detail
    assert detail["provider"] == "prov-a" and detail["upstream_id"] == "9001"
    assert detail["state"] == "placed" and detail["net_margin"] == "0.02500"
    overview = (await api(app, "GET", "/overview")).json()
    assert overview["today"]["orders"] == 2 and overview["week"]["orders"] == 2
    assert overview["today"]["charged"] == "0.10500"  # 0.075 + 0.03
    assert overview["today"]["margin"] == "0.03500"
    assert overview["orders_per_minute"]["last_60"] > 0
    assert is_json_error(await api(app, "GET", "/orders/999999"), 404)
    assert is_json_error(await api(app, "GET", "/orders/abc"), 404)


@with_admin
async def test_resolve_an_unknown_order(app: App) -> None:
    r = await api(app, "POST", "/clients/bob/topup", {"amount": "1", "note": "test"})
    assert r.json()["message"] == "topup 1.00000: balance 1.00000"
    app.providers["prov-a"].fail("add", HttpStatus(500))  # may have landed: unknown
    r = await app.post(key="bob-key", action="add", service=1, link="https://t/x",
                       quantity=100)
    assert "could not be confirmed" in r.json()["error"]
    overview = (await api(app, "GET", "/overview")).json()
    assert overview["unknown_orders"] == 1 and overview["today"]["unknown"] == 1
    order = overview["unknown"][0]["order"]
    assert (await api(app, "GET", f"/orders/{order}")).json()["resolvable"] is True
    assert is_json_error(await api(app, "POST", f"/orders/{order}/resolve", {}), 400)
    assert is_json_error(await api(app, "POST", f"/orders/{order}/resolve", [1]), 400)
    r = await api(app, "POST", f"/orders/{order}/resolve", {"placed": None})
    assert r.json() == {"ok": True, "message":
                        f"order {order} marked not placed; 0.07500 back to bob"}
    detail = (await api(app, "GET", f"/orders/{order}")).json()
    assert detail["state"] == "failed" and detail["refunded"] == "0.07500"
    assert [e["type"] for e in detail["ledger_entries"]] == ["charge", "release"]
    assert await app.call(key="bob-key", action="balance") == {
        "balance": "1.00000", "currency": "USD"}
    again = await api(app, "POST", f"/orders/{order}/resolve", {"placed": "77"})
    assert "not unknown" in is_json_error(again, 400)
    assert (await api(app, "GET", "/overview")).json()["unknown_orders"] == 0


@with_admin
async def test_confirm_a_held_rate(app: App) -> None:
    for p in app.providers.values():
        p.services = [dict(s, rate=str(float(s["rate"]) * 10)) if str(s["service"])
                      in ("1", "11") else s for s in p.services]
    app.clock.advance(86400 * 1.2)
    app.in_app(app.resources.catalog.sync)
    catalog = (await api(app, "GET", "/catalog")).json()
    one = next(s for s in catalog["services"] if s["id"] == 1)
    assert one["held"] == {"advertised": "0.75000", "computed": "7.50000"}
    # held: nothing is picked at the advertised rate until the new one is confirmed
    assert one["pick"] is None
    assert [c["provider"] for c in one["candidates"]] == ["prov-a", "prov-b"]
    assert not any(c["picked"] for c in one["candidates"])
    r = await api(app, "POST", "/catalog/1/confirm")
    assert "will be advertised" in r.json()["message"]
    one = next(s for s in (await api(app, "GET", "/catalog")).json()["services"]
               if s["id"] == 1)
    assert one["held"] is None and one["rate"] == "7.50000" and one["pick"] == "prov-a"
    assert one["policy"] == "cheapest"
    assert {"policy", "explored", "score"} <= one["candidates"][0].keys()
    assert is_json_error(await api(app, "POST", "/catalog/77/confirm"), 400)


@with_admin
async def test_client_keys_create_rotate_disable_topup(app: App) -> None:
    r = await api(app, "POST", "/clients", {"name": "carol", "mode": "ledger", "credit": "5"})
    assert r.status_code == 201
    key = r.json()["key"]
    assert await app.call(key=key, action="balance") == {"balance": "5.00000", "currency": "USD"}
    listed = (await api(app, "GET", "/clients")).json()["clients"]
    assert [c["name"] for c in listed] == ["alice", "bob", "carol"]
    assert key not in (await api(app, "GET", "/clients")).text
    assert "exists" in is_json_error(await api(app, "POST", "/clients", {"name": "carol"}), 400)
    assert is_json_error(await api(app, "POST", "/clients", {"name": "a b"}), 400)
    rotated = (await api(app, "POST", "/clients/carol/rotate")).json()["key"]
    app.clock.advance(5)  # past the key cache
    assert (await app.post(key=key, action="balance")).status_code == 401
    assert (await app.call(key=rotated, action="balance"))["balance"] == "5.00000"
    r = await api(app, "POST", "/clients/carol/topup", {"amount": "2.5"})
    assert r.json()["message"] == "topup 2.50000: balance 7.50000"
    assert is_json_error(await api(app, "POST", "/clients/carol/topup", {"amount": "x"}), 400)
    assert is_json_error(await api(app, "POST", "/clients/alice/topup", {"amount": "1"}), 400)
    r = await api(app, "POST", "/clients/carol/disable")
    assert r.json()["message"] == "client carol disabled"
    app.clock.advance(5)
    assert (await app.post(key=rotated, action="balance")).status_code == 401
    carol = (await api(app, "GET", "/clients/carol")).json()
    assert carol["active"] is False and carol["balance"] == "7.50000"
    assert [e["type"] for e in carol["history"]] == ["topup", "topup"]
    assert is_json_error(await api(app, "POST", "/clients/nobody/rotate"), 400)
    audit = (await api(app, "GET", "/audit")).json()["audit"]
    assert [(a["action"], a["target"], a["ok"]) for a in audit][:4] == [
        ("client_rotate", "nobody", False), ("client_disable", "carol", True),
        ("client_topup", "alice", False), ("client_topup", "carol", True)]
    assert all(key not in str(a) and rotated not in str(a) for a in audit)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def login(app: App) -> str:
    """Log in through the form; the session's CSRF token."""
    page = await app.http.get("/admin/login")
    r = await app.http.post("/admin/login", data={"csrf": _csrf(page.text), "key": ADMIN},
                            follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/"
    overview = await app.http.get("/admin/", follow_redirects=False)
    assert overview.status_code == 200 and "Unknown orders" in overview.text
    return _csrf(overview.text)


@with_admin
async def test_pages_need_a_session(app: App) -> None:
    for path in ("/admin/", "/admin/orders", "/admin/catalog", "/admin/clients"):
        r = await app.http.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/login", path
    page = await app.http.get("/admin/login")
    r = await app.http.post("/admin/login", data={"csrf": _csrf(page.text), "key": "wrong"},
                            follow_redirects=False)
    assert r.status_code == 401 and "Wrong admin key" in r.text
    assert "gw_admin=" not in r.headers.get("set-cookie", "").replace("gw_admin_login", "")


@with_admin
async def test_session_cookie_flags(app: App) -> None:
    page = await app.http.get("/admin/login")
    r = await app.http.post("/admin/login", data={"csrf": _csrf(page.text), "key": ADMIN},
                            follow_redirects=False)
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith("gw_admin="))
    flags = {part.strip().lower() for part in session.split(";")}
    assert {"httponly", "samesite=strict", "path=/admin"} <= flags
    assert "secure" not in flags, "plain http: a Secure cookie would never come back"
    https = await app.http.get("https://testserver.local/admin/login")
    r = await app.http.post("https://testserver.local/admin/login",
                            data={"csrf": _csrf(https.text), "key": ADMIN},
                            follow_redirects=False)
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith("gw_admin="))
    assert "secure" in {part.strip().lower() for part in session.split(";")}
    assert https.headers["x-frame-options"] == "DENY"


@with_admin
async def test_a_post_without_the_csrf_token_is_refused(app: App) -> None:
    page = await app.http.get("/admin/login")
    r = await app.http.post("/admin/login", data={"key": ADMIN}, follow_redirects=False)
    assert "CSRF" in is_json_error(r, 403)
    assert _csrf(page.text)
    csrf = await login(app)
    for data in ({}, {"csrf": "forged"}):
        r = await app.http.post("/admin/clients", data={"name": "mallory", **data},
                                follow_redirects=False)
        assert "CSRF" in is_json_error(r, 403)
    r = await app.http.post("/admin/clients", data={"name": "mallory", "csrf": csrf},
                            headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert "Cross-origin" in is_json_error(r, 403)
    assert "mallory" not in (await api(app, "GET", "/clients")).text
    r = await app.http.post("/admin/clients", data={"name": "mallory", "csrf": csrf},
                            follow_redirects=False)
    assert r.status_code == 200 and 'id="new-key"' in r.text
    # a session's GETs reach the API (the overview's refresh), its POSTs do not
    assert (await app.http.get("/admin/api/overview")).status_code == 200
    assert is_json_error(await app.http.post("/admin/api/clients/mallory/disable"), 401)


@with_admin
async def test_page_actions_are_audited_and_logged(app: App,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    csrf = await login(app)
    with caplog.at_level(logging.INFO, logger="gateway.admin"):
        r = await app.http.post("/admin/clients/bob/topup",
                                data={"csrf": csrf, "amount": "3", "note": "by hand"},
                                follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/clients/bob"
        page = await app.http.get("/admin/clients/bob")
        assert "topup 3.00000: balance 3.00000" in page.text and "by hand" in page.text
        r = await app.http.post("/admin/orders/424242/resolve",
                                data={"csrf": csrf, "outcome": "not_placed"},
                                follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/orders/424242"
        assert is_json_error(await app.http.get(r.headers["location"]), 404)
    # (the login's own line may land inside the block on a busy machine: the login is
    # checked on the Overview below)
    lines = [rec for rec in caplog.records
             if rec.name == "gateway.admin" and rec.__dict__.get("action") != "login"]
    assert [(rec.__dict__["action"], rec.__dict__["ok"]) for rec in lines] == [
        ("client_topup", True), ("resolve", False)]
    overview = (await app.http.get("/admin/")).text
    assert "client_topup" in overview and "login" in overview
    for path in ("/admin/providers", "/admin/orders?q=x", "/admin/catalog", "/admin/clients"):
        r = await app.http.get(path)
        assert r.status_code == 200 and "<!doctype html>" in r.text, path


@with_admin
async def test_no_answer_shows_a_provider_key_or_a_client_key(app: App) -> None:
    order = (await app.call(action="add", service=1, link="https://t/k", quantity=100))["order"]
    secrets = [upstream_key("prov-a"), upstream_key("prov-b"), ALICE, "bob-key", ADMIN]
    csrf = await login(app)
    assert csrf
    for path in ("/overview", "/providers", "/orders?q=", f"/orders/{order}", "/catalog",
                 "/clients", "/clients/alice", "/clients/bob", "/audit"):
        r = await api(app, "GET", path)
        assert r.status_code == 200, path
        assert not any(secret in r.text for secret in secrets), path
    for path in ("/admin/", "/admin/providers", "/admin/orders", f"/admin/orders/{order}",
                 "/admin/catalog", "/admin/clients", "/admin/clients/alice"):
        r = await app.http.get(path)
        assert r.status_code == 200 and not any(secret in r.text for secret in secrets), path


@with_admin
async def test_alerts_are_listed_on_the_overview(app: App) -> None:
    """An alert the gateway raised (here: an order whose outcome is unknown) is listed by
    /admin/api/alerts, in the overview's data and on the Overview page."""
    import html

    import anyio

    assert (await api(app, "GET", "/alerts")).json() == {"alerts": []}
    assert is_json_error(await api(app, "GET", "/alerts", headers={}), 401)
    app.providers["prov-a"].fail("add", HttpStatus(500))
    r = await app.post(action="add", service=1, link="https://t/alert", quantity=100)
    assert "could not be confirmed" in r.json()["error"]
    with anyio.fail_after(5):
        while not (alerts := (await api(app, "GET", "/alerts")).json()["alerts"]):
            await anyio.sleep(0.02)
    assert [(a["kind"], a["severity"]) for a in alerts] == [("order_unknown", "critical")]
    overview = (await api(app, "GET", "/overview")).json()
    assert [a["kind"] for a in overview["alerts"]] == ["order_unknown"]
    login = await app.http.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert token is not None
    await app.http.post("/admin/login", data={"key": ADMIN, "csrf": token.group(1)})
    page = await app.http.get("/admin/")
    assert page.status_code == 200 and 'id="alerts"' in page.text
    assert html.escape(alerts[0]["message"]) in page.text


@with_admin
async def test_the_route_explainer(app: App) -> None:
    """/admin/api/route says what `smm-gateway route` says: each candidate's cost for
    this order, its range and breaker, and which one is TAKEN; bad input is a 400."""
    r = await api(app, "GET", "/route?service=1&quantity=100")
    assert r.status_code == 200, r.text
    x = r.json()
    assert x["taken"] == "prov-a" and x["in_range"] is True and x["client"] is None
    a, b = x["candidates"]
    assert (a["provider"], a["verdict"], a["cost_rate"], a["cost"], a["breaker"]) == (
        "prov-a", "taken", "0.50000", "0.05000", "closed")
    assert (b["provider"], b["verdict"], b["reason"]) == ("prov-b", "fallback", None)
    assert a["min"] <= 100 <= a["max"]
    lines = app.in_app(ops_route, app.resources, 1, 100, None)
    assert any("prov-a #1" in line and "TAKEN" in line for line in lines)
    for_alice = (await api(app, "GET", "/route?service=1&quantity=100&client=alice")).json()
    assert for_alice["client"] == "alice" and for_alice["taken"] == "prov-a"
    huge = (await api(app, "GET", "/route?service=1&quantity=999999999")).json()
    assert huge["in_range"] is False and huge["taken"] is None
    assert all(c["verdict"] == "skipped" and c["reason"] for c in huge["candidates"])
    for query, words in (("service=1", "quantity"), ("quantity=5", "service"),
                         ("service=abc&quantity=5", "service"),
                         ("service=1&quantity=-3", "quantity"),
                         ("service=999&quantity=100", "not in the catalog"),
                         ("service=1&quantity=100&client=nobody", "No client")):
        assert words in is_json_error(await api(app, "GET", f"/route?{query}"), 400), query
    assert "Bearer" in is_json_error(
        await api(app, "GET", "/route?service=1&quantity=100", headers={}), 401)
    await login(app)
    page = await app.http.get("/admin/catalog?service=1&quantity=100&client=alice")
    assert page.status_code == 200 and 'id="route-table"' in page.text
    assert "TAKEN: the next order goes here" in page.text
    bad = await app.http.get("/admin/catalog?service=1&quantity=x")
    assert bad.status_code == 200 and 'id="route-error"' in bad.text


@with_admin
async def test_providers_show_failure_rates_and_latency(app: App) -> None:
    """A provider's breaker window (calls, failures, rate) and this process's upstream
    latency, on /admin/api/providers and the Providers page."""
    import anyio

    app.providers["prov-a"].fail_always("add", Unreachable())  # writes retry a connect
    await app.call(action="add", service=1, link="https://t/rates", quantity=100)
    app.providers["prov-a"].fail_always("add", None)
    with anyio.fail_after(5):
        while True:
            found = {p["name"]: p for p in (await api(app, "GET", "/providers")).json()[
                "providers"]}
            if found["prov-b"]["window"]["calls"]:  # successes are flushed within 0.1 s
                break
            await anyio.sleep(0.05)
    a, b = found["prov-a"]["window"], found["prov-b"]["window"]
    assert a["failures"] == 1 and a["calls"] >= 1 and a["failure_rate"] > 0
    assert b["failures"] == 0 and b["failure_rate"] == 0.0 and a["seconds"] == 60
    for p in found.values():
        assert p["latency"]["calls"] >= 1 and p["latency"]["mean_s"] >= 0
    await login(app)
    page = await app.http.get("/admin/providers")
    assert 'id="window-prov-a"' in page.text and "% failed" in page.text
    assert 'id="latency-prov-b"' in page.text and "mean " in page.text


@with_admin
async def test_an_order_shows_the_candidates_tried(app: App) -> None:
    """Each add of an order: refused (with the message) or unreachable, and where it
    was placed; a first-try order stores nothing more than before."""
    app.providers["prov-a"].fail_always("add", Unreachable())  # writes retry a connect
    first = (await app.call(action="add", service=1, link="https://t/1", quantity=100))["order"]
    app.providers["prov-a"].fail_always("add", None)
    app.providers["prov-a"].fail("add", Reject("API is under maintenance"))
    second = (await app.call(action="add", service=1, link="https://t/2", quantity=100))["order"]
    plain = (await app.call(action="add", service=1, link="https://t/3", quantity=100))["order"]
    app.providers["prov-a"].fail("add", Reject("Incorrect link"))
    r = await app.post(action="add", service=1, link="https://t/4", quantity=100)
    assert r.status_code == 400
    failed = (await api(app, "GET", "/orders?q=https://t/4")).json()["orders"][0]["order"]

    def tried(order: int) -> list[tuple[str, str, str]]:
        return [(t["provider"], t["outcome"], t["message"]) for t in detail[order]["tried"]]

    detail = {o: (await api(app, "GET", f"/orders/{o}")).json()
              for o in (first, second, plain, failed)}
    b_id = detail[first]["upstream_id"]
    assert tried(first) == [("prov-a", "unreachable", "connect failed: ConnectError"),
                            ("prov-b", "placed", f"upstream order {b_id}")]
    assert tried(second)[0] == ("prov-a", "refused", "API is under maintenance")
    assert tried(second)[1][:2] == ("prov-b", "placed")
    assert [t[:2] for t in tried(plain)] == [("prov-a", "placed")]
    assert tried(failed) == [("prov-a", "refused", "Incorrect link")]
    await login(app)
    page = await app.http.get(f"/admin/orders/{first}")
    assert 'id="tried"' in page.text and "unreachable" in page.text


@with_admin
async def test_providers_page_shows_what_each_service_delivered(app: App) -> None:
    """The scorecard of each provider service (as `route` words it) on the Providers page:
    none before an order ends, then what the finished order delivered."""
    await login(app)
    order = (await app.call(action="add", service=1, link="https://t/d", quantity=100))["order"]
    detail = (await api(app, "GET", f"/orders/{order}")).json()
    held = f'id="delivery-{detail["provider"]}-{detail["upstream_service"]}">'
    page = await app.http.get("/admin/providers")
    assert held + "no evidence yet" in page.text
    app.providers[detail["provider"]].set_status(detail["upstream_id"], "Completed", remains=0)
    assert (await app.call(action="status", order=order))["status"] == "Completed"
    page = await app.http.get("/admin/providers")
    row = re.search(held + r"([^<]*)<", page.text)
    assert row is not None and "completed 100%" in row.group(1), row
    assert "delivered 100%" in row.group(1)
