"""Clients seen in the wild, against a real gateway over the real simulators, with a
default config: a GET-only client, a client that sends arrays PHP/Node style, and a
client that raises on any 4xx (served by its own `error_status: always-200`)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from harness import Gateway, Sim, base_config


class GetOnlyClient:
    """Every action as `GET /api/v2?key=..&action=..` (a provider module's helper that
    reads the fields from the query string; some Python clients)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def call(self, action: str, **fields: Any) -> Any:
        params = {"key": self.key, "action": action, **{k: str(v) for k, v in fields.items()}}
        return httpx.get(self.url, params=params, timeout=30).json()


def build_query(fields: dict[str, Any], brackets: str) -> str:
    """PHP `http_build_query` (`indexed`: orders[0]=1&orders[1]=2) or Node `qs` with
    arrayFormat brackets (`empty`: orders[]=1&orders[]=2)."""
    parts = []
    for name, value in fields.items():
        if isinstance(value, list):
            for i, item in enumerate(value):
                index = str(i) if brackets == "indexed" else ""
                parts.append(f"{quote(name)}%5B{index}%5D={quote(str(item))}")
        else:
            parts.append(f"{quote(name)}={quote(str(value))}")
    return "&".join(parts)


class ArrayClient:
    """Sends id lists as arrays in the body, never as `1,2`."""

    def __init__(self, url: str, key: str, brackets: str) -> None:
        self.url, self.key, self.brackets = url, key, brackets

    def call(self, action: str, **fields: Any) -> Any:
        body = build_query({"key": self.key, "action": action, **fields}, self.brackets)
        return httpx.post(self.url, content=body.encode(), timeout=30, headers={
            "Content-Type": "application/x-www-form-urlencoded"}).json()


class RaisingClient:
    """A `requests`-style client: `raise_for_status()` on every answer, then `.json()`."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def call(self, action: str, **fields: Any) -> Any:
        r = httpx.post(self.url, data={"key": self.key, "action": action, **fields},
                       timeout=30)
        r.raise_for_status()
        return r.json()


def place(gw: Gateway, n: int) -> list[int]:
    return [int(gw.call(action="add", service=1, link=f"https://t/{i}",
                        quantity=100)["order"]) for i in range(n)]


def test_get_only_client_runs_every_action(stack: tuple[Gateway, Sim, Sim]) -> None:
    gw, a, b = stack
    api = GetOnlyClient(gw.url, "alice-key")
    services = api.call("services")
    assert services == gw.call(action="services")
    assert [s["service"] for s in services][:2] == [1, 2]
    assert api.call("balance") == gw.call(action="balance")
    o1 = api.call("add", service=1, link="https://tiktok.com/@me", quantity=100)["order"]
    o2 = api.call("add", service=1, link="https://tiktok.com/@you", quantity=200)["order"]
    assert (o1, o2) == (5000, 5001)
    assert len(b.orders()) == 2  # routed like a POST: prov-b is cheaper
    assert api.call("status", order=o1) == {"charge": "0.06000", "start_count": "0",
                                            "status": "Pending", "remains": "100",
                                            "currency": "USD"}
    multi = api.call("status", orders=f"{o2},{o1},7")
    assert list(multi) == [str(o2), str(o1), "7"] and multi["7"] == {
        "error": "Incorrect order ID"}
    b.control("orders/1", {"status": "Completed"})
    b.control("orders/2", {"status": "Completed"})
    refill = api.call("refill", order=o1)
    assert refill == {"refill": 700}
    assert api.call("refill", orders=f"{o2},{o1}") == [{"order": o2, "refill": 701},
                                                       {"order": o1, "refill": 702}]
    assert api.call("refill_status", refill=700)["status"] in ("Pending", "Completed")
    statuses = api.call("refill_status", refills="700,9")
    assert statuses[1] == {"refill": 9, "status": {"error": "Refill not found"}}
    assert api.call("cancel", orders=f"{o1},9") == [
        {"order": o1, "cancel": {"error": "Order cannot be canceled"}},  # Completed
        {"order": 9, "cancel": {"error": "Incorrect order ID"}}]
    assert api.call("status", order=999999) == {"error": "Incorrect order ID"}
    assert GetOnlyClient(gw.url, "wrong").call("balance") == {"error": "Invalid API key"}
    browser = httpx.get(gw.url + "/")  # no action: a browser opening the URL
    assert (browser.status_code, browser.json()) == (404, {"error": "Not Found"})


@pytest.mark.parametrize("brackets", ["indexed", "empty"])
def test_array_client_for_status_refill_refill_status_and_cancel(
        stack: tuple[Gateway, Sim, Sim], brackets: str) -> None:
    gw, a, b = stack
    api = ArrayClient(gw.url, "alice-key", brackets)
    o1, o2, o3 = place(gw, 3)
    multi = api.call("status", orders=[o3, o1, "x"])
    assert list(multi) == [str(o3), str(o1), "x"]
    assert multi[str(o3)]["status"] == "Pending" and multi["x"] == {
        "error": "Incorrect order ID"}
    for upstream in ("1", "2"):
        b.control(f"orders/{upstream}", {"status": "Completed"})
    refills = api.call("refill", orders=[o2, o1, 424242])
    assert refills == [{"order": o2, "refill": 700}, {"order": o1, "refill": 701},
                       {"order": 424242, "refill": {"error": "Incorrect order ID"}}]
    statuses = api.call("refill_status", refills=[701, 700, 5])
    assert [s["refill"] for s in statuses] == [701, 700, 5]
    assert statuses[0]["status"] in ("Pending", "In progress", "Completed")
    assert statuses[2]["status"] == {"error": "Refill not found"}
    canceled = api.call("cancel", orders=[o3, 424242])
    assert canceled == [{"order": o3, "cancel": 1},
                        {"order": 424242, "cancel": {"error": "Incorrect order ID"}}]
    assert b.orders()[2]["status"] == "Canceled"
    one = api.call("status", orders=[o1])  # a one-element array is still a multi-status
    assert list(one) == [str(o1)]


def test_raise_on_4xx_client_gets_200_errors_from_its_own_setting(
        sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Any) -> None:
    a, b = sims
    a.reset()
    b.reset()
    config = copy.deepcopy(base_config(a, b))  # the gateway itself stays `standard`
    config["clients"] = [*config["clients"],
                         {"name": "pyclient", "key": "py-key", "error_status": "always-200"}]
    gw = Gateway(config, fresh_redis, tmp_path)
    try:
        api = RaisingClient(gw.url, "py-key")
        order = api.call("add", service=1, link="https://t/x", quantity=100)["order"]
        assert api.call("status", order=order)["status"] == "Pending"
        for action, fields, message in (
                ("status", {"order": "424242"}, "Incorrect order ID"),
                ("add", {"service": "1", "link": "l", "quantity": "1"},
                 "Quantity less than minimal 20"),
                ("add", {"service": "999", "link": "l", "quantity": "100"},
                 "Incorrect service ID"),
                ("refill_status", {"refill": "5"}, "Refill not found"),
                ("fly", {}, "Incorrect request: unknown action")):
            assert api.call(action, **fields) == {"error": message}  # no raise
            other = gw.post(key="alice-key", action=action, **fields)
            assert (other.status_code, other.json()) == (400, {"error": message})
        # before the key names a client, the gateway's own setting answers
        with pytest.raises(httpx.HTTPStatusError) as caught:
            RaisingClient(gw.url, "not-a-key").call("balance")
        assert caught.value.response.status_code == 401
    finally:
        gw.stop()
