"""Order rescue over HTTP: a `smm-gateway serve` process and the two simulators. The
cheaper provider (testedsmm, service 11) stalls every order; with `rescue_after_s`
the gateway cancels it there and places it at the other (toksmm, service 1) under
the same order id, where it completes; with the stalling provider refusing cancels
the rescue stops and the order is flagged for the operator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import Gateway, Sim, base_config

ADMIN = "rescue-admin-key-0123456789"
AFTER_S = 2


@pytest.fixture
def gw(sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> Iterator[Gateway]:
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, admin_key=ADMIN, rescue_every_s=0.3, rescue_confirm_s=5)
    config["services"][0]["rescue_after_s"] = AFTER_S  # service 1: b #11 first, then a #1
    gateway = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        yield gateway
    finally:
        gateway.stop()


def admin_order(gw: Gateway, order: int) -> Any:
    r = httpx.get(f"http://127.0.0.1:{gw.port}/admin/api/orders/{order}",
                  headers={"Authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return r.json()


def wait_for(check: Callable[[], Any], seconds: float = 8) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_a_stalled_order_is_rescued_under_the_same_id_and_completes(gw, sims):
    a, b = sims
    assert b.control("behaviour", {"service": 11, "stall_rate": 1}) == {"ok": True}
    order = gw.call(action="add", service=1, link="https://tiktok.com/@stuck", quantity=100)
    assert "order" in order, order
    oid = order["order"]
    first = gw.call(action="status", order=oid)
    assert first["status"] == "Pending"
    [stalled] = b.orders()
    assert stalled["fate"] == "stall"

    rescued = wait_for(lambda: a.orders())
    assert rescued, gw.log()[-3000:]
    [moved] = rescued
    assert moved["link"] == "https://tiktok.com/@stuck" and int(moved["quantity"]) == 100
    assert len(b.requests("cancel")) == 1 and len(b.requests("add")) == 1
    assert [o["status"] for o in b.orders()] == ["Canceled"]

    # the panel's order goes on at the new provider; the charge it sees stands
    assert gw.call(action="status", order=oid)["charge"] == first["charge"]
    assert a.control("clock", {"advance_s": 7200}) == {"ok": True}
    done = gw.call(action="status", order=oid)
    assert (done["status"], done["remains"], done["charge"]) == \
        ("Completed", "0", first["charge"])
    detail = admin_order(gw, oid)
    assert detail["provider"] == "prov-a" and detail["flagged"] is None
    assert [p["provider"] for p in detail["rescue"]["prior"]] == ["prov-b"]
    whats = [h["what"] for h in detail["history"]]
    assert "rescue_cancel_requested" in whats and "replaced -> prov-a" in whats
    assert whats[-1] == "Completed"
    assert len(a.requests("add")) == 1, "sent once"


def test_a_refused_cancel_stops_the_rescue_and_flags_the_order(gw, sims):
    a, b = sims
    assert b.control("behaviour", {"service": 11, "stall_rate": 1,
                                   "refuse_cancel": True}) == {"ok": True}
    oid = gw.call(action="add", service=1, link="https://tiktok.com/@nocancel",
                  quantity=100)["order"]
    flagged = wait_for(lambda: admin_order(gw, oid)["flagged"])
    assert flagged and "cancel refused" in flagged, gw.log()[-3000:]
    assert a.orders() == [], "no second provider while the first may deliver"
    assert gw.call(action="status", order=oid)["status"] == "Pending"
    detail = admin_order(gw, oid)
    assert detail["provider"] == "prov-b"
    assert any(h["what"].startswith("rescue_stopped") for h in detail["history"])
