"""Drop-in for every panel client: GET with the fields in the query string, arrays in
every spelling, `error_status` per client, refill ids in request order.

In-process (the `app` fixture): the real app over real Redis, fake providers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from gateway.clock import ManualClock
from gateway.config import parse_settings
from gateway.state.clients import ClientRecord
from inprocess import ALICE, BOB, App, config_text, serve
from upstream import FakeProvider

pytestmark = pytest.mark.anyio

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def get(app: App, path: str = "/api/v2", **fields: Any) -> httpx.Response:
    return await app.http.get(path, params={k: str(v) for k, v in fields.items()})


async def raw_post(app: App, body: str, query: str = "") -> httpx.Response:
    return await app.http.post("/api/v2" + (f"?{query}" if query else ""),
                               content=body.encode(), headers=FORM)


async def place(app: App, n: int = 1, key: str = ALICE) -> list[int]:
    out = []
    for i in range(n):
        answer = await app.call(key, action="add", service=1, link=f"https://t.co/{i}",
                                quantity=100)
        out.append(int(answer["order"]))
    return out


# --- 1. GET, and the query string under a POST -------------------------------------


@pytest.mark.parametrize("path", ["/api/v2", "/api/v2/"])
async def test_get_serves_every_action_like_the_post(app: App, path: str) -> None:
    added = await get(app, path, key=ALICE, action="add", service=1, link="https://t.co/g",
                      quantity=100)
    assert (added.status_code, added.content) == (200, b'{"order":1000}')
    assert added.headers["content-type"] == "application/json"
    [other] = await place(app)
    for fields in ({"action": "services"}, {"action": "balance"},
                   {"action": "status", "order": 1000},
                   {"action": "status", "orders": f"1000,{other},x"},
                   {"action": "status", "order": "x"},
                   {"action": "cancel", "orders": "424242"},
                   {"action": "refill_status", "refill": 9}, {"action": "fly"},
                   {"action": "add", "service": 1, "link": "l", "quantity": 1}):
        by_get = await get(app, path, key=ALICE, **fields)
        by_post = await app.post(**fields)
        assert (by_get.status_code, by_get.content) == (by_post.status_code, by_post.content)
        assert by_get.headers["content-type"] == "application/json"
        if by_get.status_code == 200:
            assert by_get.headers["cache-control"] == "private, no-cache"
    refill = await get(app, path, key=ALICE, action="refill", order=1000)
    assert refill.json() == {"refill": 500}
    assert (await get(app, path, key=ALICE, action="refill_status", refill=500)).json() == {
        "status": "Pending"}
    assert (await get(app, path, key=ALICE, action="cancel", order=1000)).json() == [
        {"order": 1000, "cancel": 1}]


@pytest.mark.parametrize("name", ["key", "api", "api_token"])
async def test_get_takes_the_key_in_every_field(app: App, name: str) -> None:
    r = await app.http.get("/api/v2", params={name: BOB, "action": "balance"})
    assert r.status_code == 200 and r.json()["currency"] == "USD"


async def test_get_authenticates_like_the_post(app: App) -> None:
    for key in ("nope", ""):
        r = await get(app, key=key, action="balance")
        assert (r.status_code, r.json()) == (401, {"error": "Invalid API key"})
    r = await get(app, action="balance")
    assert (r.status_code, r.json()) == (401, {"error": "Invalid API key"})
    r = await app.http.get("/api/v2", params={"action": "balance"},
                           headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200


@pytest.mark.parametrize("query", ["", "key=alice-key", "key=alice-key&action=",
                                   "key=alice-key&action=%20", "foo=bar"])
async def test_get_without_an_action_is_not_found(app: App, query: str) -> None:
    for path in ("/api/v2", "/api/v2/"):
        r = await app.http.get(path + (f"?{query}" if query else ""))
        assert r.status_code == 404
        assert r.json() == {"error": "Not Found"}
        assert r.headers["content-type"] == "application/json"


async def test_services_etag_over_get(app: App) -> None:
    first = await get(app, key=ALICE, action="services")
    etag = first.headers["etag"]
    again = await app.http.get("/api/v2", params={"key": ALICE, "action": "services"},
                               headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


async def test_post_reads_the_query_string_under_the_body(app: App) -> None:
    # the body wins
    r = await raw_post(app, "key=alice-key&action=balance", query="action=services&key=x")
    assert r.json() == {"balance": "120.50000", "currency": "USD"}
    # fields split between both
    r = await raw_post(app, "action=balance", query="key=bob-key")
    assert r.status_code == 200 and r.json()["currency"] == "USD"
    # an empty body with everything in the query string
    for headers in (FORM, {}):
        r = await app.http.post("/api/v2?key=alice-key&action=balance", headers=headers)
        assert r.json() == {"balance": "120.50000", "currency": "USD"}
    r = await app.http.post("/api/v2/?key=alice-key&action=balance", json={})
    assert r.json()["currency"] == "USD"
    r = await app.http.post("/api/v2?key=alice-key&action=balance", content=b"",
                            headers={"content-type": "text/xml"})
    assert r.json()["currency"] == "USD"
    # a POST without an action is still "Missing action", not 404
    r = await raw_post(app, "key=alice-key")
    assert (r.status_code, r.json()) == (400, {"error": "Missing action"})


# --- 2. arrays in every spelling -----------------------------------------------------


def spellings(name: str, ids: list[str]) -> list[str]:
    """The query texts clients send for `name` = ids."""
    return [
        urlencode({name: ",".join(ids)}),
        "&".join(f"{name}%5B%5D={i}" for i in ids),  # orders[]=  (Node qs, PHP)
        "&".join(f"{name}[]={i}" for i in ids),
        "&".join(f"{name}%5B{n}%5D={i}" for n, i in enumerate(ids)),  # http_build_query
        "&".join(f"{name}[{n}]={i}" for n, i in enumerate(ids)),
        "&".join(f"{name}={i}" for i in ids),  # Python requests with a list
    ]


@pytest.mark.parametrize("form", range(6))
async def test_multi_status_in_every_array_spelling(app: App, form: int) -> None:
    one, two = await place(app, 2)
    ids = [str(two), "x", str(one)]
    body = "key=alice-key&action=status&" + spellings("orders", ids)[form]
    r = await raw_post(app, body)
    assert r.status_code == 200
    answer = r.json()
    assert list(answer) == ids
    assert answer[str(one)]["status"] == answer[str(two)]["status"] == "Pending"
    assert answer["x"] == {"error": "Incorrect order ID"}
    by_get = await app.http.get("/api/v2?key=alice-key&action=status&"
                                + spellings("orders", ids)[form])
    assert by_get.content == r.content


@pytest.mark.parametrize("orders", [[1000, 1001], ["1000", "1001"], "1000,1001"])
async def test_json_body_arrays(app: App, orders: Any) -> None:
    await place(app, 2)
    r = await app.http.post("/api/v2", json={"key": ALICE, "action": "status",
                                             "orders": orders})
    assert list(r.json()) == ["1000", "1001"]


async def test_single_element_array_is_still_a_multi_answer(app: App) -> None:
    [one] = await place(app)
    r = await raw_post(app, f"key=alice-key&action=status&orders[]={one}")
    assert list(r.json()) == [str(one)]
    r = await raw_post(app, f"key=alice-key&action=refill&orders[0]={one}")
    assert r.json() == [{"order": one, "refill": 500}]


async def test_array_forms_keep_the_comma_rules(app: App) -> None:
    one, two = await place(app, 2)
    # trimmed, blanks dropped, first occurrence kept
    r = await raw_post(app, f"key=alice-key&action=status&orders[]=+{one}+&orders[]="
                            f"&orders[]={two}&orders[]={one}")
    assert list(r.json()) == [str(one), str(two)]
    many = "&".join(f"orders[]={i}" for i in range(1, 102))
    r = await raw_post(app, "key=alice-key&action=status&" + many)
    assert (r.status_code, r.json()) == (400, {"error": "Too many IDs, at most 100 per request"})
    r = await raw_post(app, "key=alice-key&action=status&orders[]=&orders[]=+")
    assert r.status_code == 400


@pytest.mark.parametrize("form", [1, 3, 5])
async def test_refill_refill_status_and_cancel_take_arrays(app: App, form: int) -> None:
    one, two = await place(app, 2)
    ids = [str(one), "77", str(two)]
    refill = (await raw_post(app, "key=alice-key&action=refill&"
                                  + spellings("orders", ids)[form])).json()
    assert refill == [{"order": one, "refill": 500},
                      {"order": 77, "refill": {"error": "Incorrect order ID"}},
                      {"order": two, "refill": 501}]
    statuses = (await raw_post(app, "key=alice-key&action=refill_status&"
                                    + spellings("refills", ["501", "9", "500"])[form])).json()
    assert statuses == [{"refill": 501, "status": "Pending"},
                        {"refill": 9, "status": {"error": "Refill not found"}},
                        {"refill": 500, "status": "Pending"}]
    cancel = (await raw_post(app, "key=alice-key&action=cancel&"
                                  + spellings("orders", [str(two), "x"])[form])).json()
    assert cancel == [{"order": two, "cancel": 1},
                      {"order": "x", "cancel": {"error": "Incorrect order ID"}}]


async def test_comments_as_an_array_are_one_per_line(app: App) -> None:
    r = await app.http.post("/api/v2", json={
        "key": ALICE, "action": "add", "service": 1, "link": "l", "quantity": 100,
        "comments": ["a, b", "c"]})
    assert r.status_code == 200  # a Default service: comments are not its family
    r = await raw_post(app, "key=alice-key&action=add&service=1&link=l&quantity=100"
                            "&usernames[]=a&usernames[]=b")
    assert r.status_code == 200
    sent = app.providers["prov-a"].requests[-1]
    assert sent["usernames"] == "a\nb"


# --- 3. error_status per client ------------------------------------------------------


def _settings_with(gateway_status: str, **clients: str | None) -> Any:
    config = yaml.safe_load(config_text(error_status=gateway_status))
    for name, status in clients.items():
        entry: dict[str, Any] = {"name": name, "key": f"{name}-key"}
        if status is not None:
            entry["error_status"] = status
        config["clients"].append(entry)
    return parse_settings(yaml.safe_dump(config), env={})


async def _errors(app: App, key: str) -> list[tuple[int, Any]]:
    """An error of each kind after authentication, as (status, body)."""
    out = []
    for fields in ({}, {"action": "fly"}, {"action": "status", "order": "x"},
                   {"action": "add", "service": 99, "link": "l", "quantity": 10}):
        r = await app.post(key, **fields)
        out.append((r.status_code, r.json()))
    r = await get(app, key=key, action="refill_status", refill="7")
    out.append((r.status_code, r.json()))
    return out


MESSAGES = ["Missing action", "Incorrect request: unknown action", "Incorrect order ID",
            "Incorrect service ID", "Refill not found"]


async def test_a_client_can_have_always_200_on_a_standard_gateway(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    settings = _settings_with("standard", raiser="always-200", strict="standard")
    async with serve(settings, redis_url, providers, clock) as app:
        assert await _errors(app, "raiser-key") == [(200, {"error": m}) for m in MESSAGES]
        for key in (ALICE, "strict-key"):
            assert await _errors(app, key) == [(400, {"error": m}) for m in MESSAGES]
        # before the client is known: the gateway's setting
        r = await app.post("nope", action="balance")
        assert (r.status_code, r.json()) == (401, {"error": "Invalid API key"})
        r = await app.http.get("/api/v2")
        assert r.status_code == 404
        # answers that are not errors are untouched
        assert (await app.post("raiser-key", action="balance")).status_code == 200


async def test_a_client_can_keep_standard_on_an_always_200_gateway(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    settings = _settings_with("always-200", strict="standard", plain=None)
    async with serve(settings, redis_url, providers, clock) as app:
        assert await _errors(app, "strict-key") == [(400, {"error": m}) for m in MESSAGES]
        for key in (ALICE, "plain-key"):
            assert await _errors(app, key) == [(200, {"error": m}) for m in MESSAGES]
        r = await app.post("nope", action="balance")
        assert (r.status_code, r.json()) == (200, {"error": "Invalid API key"})


async def test_rate_limit_answer_follows_the_client(app: App) -> None:
    record = ClientRecord(name="limited", key_digest="", rate_limit=0.001, burst=1,
                          error_status="always-200")
    key: str = app.in_app(app.resources.directory.create, record)
    assert (await app.post(key, action="balance")).status_code == 200
    r = await app.post(key, action="balance")
    assert (r.status_code, r.json()) == (200, {"error": "Too many requests"})


# --- 4. refill ids in request order --------------------------------------------------


async def test_multi_refill_hands_out_ids_in_request_order(app: App) -> None:
    orders = await place(app, 4)
    sent = [orders[2], orders[0], orders[3], orders[1]]
    answer = await app.call(action="refill", orders=",".join(map(str, sent)) + ",x")
    assert [a["order"] for a in answer] == [*sent, "x"]
    assert [a["refill"] for a in answer[:4]] == [500, 501, 502, 503]
    # the same order spelled twice gets one refill
    answer = await app.call(action="refill", orders=f"{orders[0]},0{orders[0]}")
    assert [a["refill"] for a in answer] == [504, 504]
    assert app.providers["prov-a"].calls["refill"] == 2
