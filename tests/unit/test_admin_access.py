"""The dashboard checks its session before any work: with none, every page answers
alike whatever it names; the admin API refuses JSON nested too deep with a 400; new
client names are letters, digits and -_. (in the API, the pages and the operator
commands alike), and a client named before that rule stays reachable."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.admin import operations, pages, queries
from gateway.admin.guard import SESSION_COOKIE
from gateway.admin.names import in_path
from gateway.state.clients import ClientRecord, Directory, digest_hex
from gateway.state.ledger import Ledger
from inprocess import App
from peer_client import send_from

ADMIN = "admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
with_admin = pytest.mark.gateway(admin_key=ADMIN)
OPERATOR = "127.0.0.1"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def log_in(app: App) -> tuple[str, str]:
    """(session cookie, CSRF token) of a new session."""
    page = await app.http.get("/admin/login")
    r = await app.http.post("/admin/login", data={"csrf": _csrf(page.text), "key": ADMIN},
                            follow_redirects=False)
    assert r.status_code == 303
    overview = await app.http.get("/admin/", follow_redirects=False)
    return r.cookies[SESSION_COOKIE], _csrf(overview.text)


@with_admin
async def test_without_a_session_every_page_answers_alike(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    order = (await app.call(action="add", service=1, link="https://tiktok.com/@me",
                            quantity=100))["order"]
    worked: list[str] = []

    def spy(name: str, real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any) -> Any:
            worked.append(name)
            return await real(*args)
        return run

    for name in ("search", "order", "client", "clients", "providers"):
        monkeypatch.setattr(queries, name, spy(name, getattr(queries, name)))
    monkeypatch.setattr(pages, "service_rows", spy("service_rows", pages.service_rows))
    paths = ["/admin/", f"/admin/orders/{order}", "/admin/orders/99999999",
             "/admin/clients/alice", "/admin/clients/nobody", f"/admin/orders?q={order}",
             "/admin/orders?q=@me", "/admin/orders?client=alice", "/admin/providers",
             "/admin/catalog?service=1&quantity=100", "/admin/clients"]
    answers = {(r.status_code, r.headers.get("location"), r.content) for r in
               [await app.http.get(p, follow_redirects=False) for p in paths]}
    assert answers == {(303, "/admin/login", b"")}
    # the API: one 401 for an order or a client that exists and for one that does not
    refused = {(r.status_code, r.content) for r in [
        await app.http.get(p) for p in (f"/admin/api/orders/{order}", "/admin/api/orders/99999999",
                                        "/admin/api/clients/alice", "/admin/api/clients/nobody",
                                        f"/admin/api/orders?q={order}")]}
    assert len(refused) == 1 and refused.pop()[0] == 401
    # the pages' POSTs too, before their form is read
    posted = {(r.status_code, r.content) for r in [
        await app.http.post(p, data={"csrf": "x"}) for p in (
            "/admin/clients/alice/disable", "/admin/clients/nobody/disable",
            f"/admin/orders/{order}/resolve", "/admin/orders/99999999/resolve")]}
    assert len(posted) == 1 and posted.pop()[0] == 401
    assert worked == []
    # with a session the same pages do their work
    await log_in(app)
    r = await app.http.get(f"/admin/orders/{order}", follow_redirects=False)
    assert r.status_code == 200 and worked == ["order"]
    assert (await app.http.get("/admin/orders/99999999")).status_code == 404


@with_admin
async def test_json_nested_too_deep_is_a_400(app: App) -> None:
    for body in (b"[" * 8000 + b"]" * 8000, b'{"a":' * 2700 + b"1" + b"}" * 2700):
        for path in ("/admin/api/clients", "/admin/api/clients/bob/topup",
                     "/admin/api/orders/1000/resolve"):
            r = await app.http.post(path, content=body,
                                    headers={**AUTH, "content-type": "application/json"})
            assert r.status_code == 400, (path, r.text)
            assert "nested" in r.json()["error"]


BAD_NAMES = ("team/a", "a b", "..", "../x", "caf\u00e9", "a%2Fb", "a?b", "#x", ".hidden",
             "x" * 65, "")


@with_admin
async def test_new_client_names_are_letters_digits_and_dashes(app: App) -> None:
    for name in BAD_NAMES:
        r = await app.http.post("/admin/api/clients", json={"name": name}, headers=AUTH)
        assert r.status_code == 400, name
        assert "letters, digits, '-', '_' or '.'" in r.json()["error"], name
    r = await app.http.post("/admin/api/clients", json={"name": "team-a_1.b"}, headers=AUTH)
    assert r.status_code == 201
    # the dashboard's form says why
    _, csrf = await log_in(app)
    r = await app.http.post("/admin/clients", data={"csrf": csrf, "name": "team/b"})
    assert r.status_code == 200 and "letters, digits" in r.text
    listed = (await app.http.get("/admin/api/clients", headers=AUTH)).json()["clients"]
    assert sorted(c["name"] for c in listed) == ["alice", "bob", "team-a_1.b"]


async def test_the_operator_commands_refuse_such_names(directory: Directory) -> None:
    ledger = Ledger(directory._redis)
    for name in BAD_NAMES:
        with pytest.raises(operations.AdminError, match="letters, digits"):
            await operations.create_client(directory, ledger,
                                           operations.NewClient(name=name, mode="ledger"))
    key = await operations.create_client(directory, ledger,
                                         operations.NewClient(name="ok.1", mode="ledger"))
    assert (await directory.identify(key)) is not None


@with_admin
@pytest.mark.parametrize("name", ["team/a", "50%off", "a b?c#d"])
async def test_a_client_named_before_the_rule_stays_reachable(app: App, name: str) -> None:
    # stored as an older gateway stored it
    app.in_app(app.resources.directory.put,
               ClientRecord(name=name, key_digest=digest_hex("old-key"), mode="ledger"))
    cookie, csrf = await log_in(app)
    session = {"cookie": f"{SESSION_COOKIE}={cookie}", "origin": "http://gateway"}

    def page(method: str, path: str, **data: str) -> httpx.Response:
        r, = send_from(app, OPERATOR, httpx.Request(method, "http://gateway" + path,
                                                    headers=session, data=data or None))
        return r

    listing = page("GET", "/admin/clients")
    href = f"/admin/clients/{in_path(name)}"
    assert f'href="{href}"' in listing.text
    opened = page("GET", href)
    assert opened.status_code == 200 and f'action="{href}/disable"' in opened.text
    done = page("POST", f"{href}/disable", csrf=csrf)
    assert done.status_code == 303 and done.headers["location"] == href
    assert "disabled" in page("GET", href).text
    rotated = page("POST", f"{href}/rotate", csrf=csrf)
    assert rotated.status_code == 200 and "sk_" in rotated.text
    # the API takes the same path segment
    r, = send_from(app, OPERATOR, httpx.Request(
        "GET", f"http://gateway/admin/api/clients/{in_path(name)}", headers=AUTH))
    assert r.status_code == 200 and r.json()["name"] == name and r.json()["active"] is False
    r, = send_from(app, OPERATOR, httpx.Request(
        "POST", f"http://gateway/admin/api/clients/{in_path(name)}/enable", headers=AUTH))
    assert r.status_code == 200 and r.json()["message"] == f"client {name} enabled"
