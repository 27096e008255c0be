"""`status`: the status cache on the clock, refunds to prepaid clients exactly once,
and the multi form across providers."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from gateway.state import keys
from inprocess import BOB, App

pytestmark = pytest.mark.anyio

TOPUP = Decimal("10")


async def place(app: App, key: str = "alice-key", service: int = 1,
                quantity: int = 400) -> int:
    answer = await app.call(key, action="add", service=service, link="https://t.co/x",
                            quantity=quantity)
    order: int = answer["order"]
    return order


def topped_up_bob(app: App) -> None:
    app.in_app(app.resources.ledger.credit, "bob", TOPUP, "topup")


def bob_balance(app: App) -> Decimal:
    return app.in_app(app.resources.ledger.balance, "bob")


def refunds(app: App) -> list[tuple[str, Decimal]]:
    return [(e.order, e.amount) for e in app.in_app(app.resources.ledger.history, "bob")
            if e.type == "refund"]


@pytest.mark.gateway(status_cache_s=30)
async def test_status_within_the_cache_time_is_not_asked_upstream(app: App) -> None:
    prov = app.providers["prov-a"]
    order = await place(app)
    first = await app.call(action="status", order=order)
    assert prov.calls["status"] == 1
    prov.set_status(prov.last_order, "In progress", remains=150, start_count=7)

    app.clock.advance(29)
    assert await app.call(action="status", order=order) == first
    assert prov.calls["status"] == 1

    app.clock.advance(2)  # 31 s: past status_cache_s
    again = await app.call(action="status", order=order)
    assert prov.calls["status"] == 2
    assert (again["status"], again["remains"], again["start_count"]) == (
        "In progress", "150", "7")


@pytest.mark.gateway(status_cache_s=0)
async def test_status_cache_off_asks_upstream_every_time(app: App) -> None:
    order = await place(app)
    for _ in range(3):
        await app.call(action="status", order=order)
    assert app.providers["prov-a"].calls["status"] == 3


async def test_partial_refunds_the_unserved_part_once(app: App) -> None:
    topped_up_bob(app)
    prov = app.providers["prov-a"]
    order = await place(app, BOB, quantity=400)  # 0.75 per 1000 -> charge 0.30
    assert bob_balance(app) == Decimal("9.70000")
    prov.set_status(prov.last_order, "Partial", remains=100)

    answer = await app.call(BOB, action="status", order=order)
    assert answer == {"charge": "0.22500", "start_count": "0", "status": "Partial",
                      "remains": "100", "currency": "USD"}
    assert bob_balance(app) == Decimal("9.77500")  # 0.30 x 100 / 400 back

    for _ in range(3):
        app.clock.advance(3600)
        assert await app.call(BOB, action="status", order=order) == answer
    assert bob_balance(app) == Decimal("9.77500")
    assert refunds(app) == [(str(order), Decimal("0.07500"))]
    assert prov.calls["status"] == 1  # a final status is never asked again


async def test_canceled_refunds_everything_once(app: App) -> None:
    topped_up_bob(app)
    prov = app.providers["prov-a"]
    order = await place(app, BOB, quantity=400)
    prov.set_status(prov.last_order, "Canceled")
    answer = await app.call(BOB, action="status", order=order)
    assert (answer["status"], answer["charge"]) == ("Canceled", "0.00000")
    app.clock.advance(3600)
    await app.call(BOB, action="status", order=order)
    assert bob_balance(app) == TOPUP
    assert refunds(app) == [(str(order), Decimal("0.30000"))]


async def test_refund_is_not_paid_twice_when_the_status_was_not_stored(
        app: App, sync_redis: redis.Redis) -> None:
    """A replica that refunded and crashed before storing the status: the next poll
    sees Partial again, and the ledger's settlement mark keeps the refund once."""
    topped_up_bob(app)
    prov = app.providers["prov-a"]
    order = await place(app, BOB, quantity=400)
    bucket = keys.order_bucket(order)
    before = sync_redis.hget(bucket, str(order))
    prov.set_status(prov.last_order, "Partial", remains=100)
    await app.call(BOB, action="status", order=order)
    sync_redis.hset(bucket, str(order), before)  # the stored status is lost

    app.clock.advance(60)
    answer = await app.call(BOB, action="status", order=order)
    assert prov.calls["status"] == 2
    assert answer["status"] == "Partial"
    assert bob_balance(app) == Decimal("9.77500")
    assert len(refunds(app)) == 1


async def test_completed_order_of_a_prepaid_client_is_not_refunded(app: App) -> None:
    topped_up_bob(app)
    prov = app.providers["prov-a"]
    order = await place(app, BOB, quantity=400)
    prov.set_status(prov.last_order, "Completed", remains=0)
    answer = await app.call(BOB, action="status", order=order)
    assert (answer["status"], answer["charge"], answer["remains"]) == (
        "Completed", "0.30000", "0")
    assert bob_balance(app) == Decimal("9.70000")
    assert refunds(app) == []


async def test_multi_status_asks_each_provider_once_and_keys_by_id(app: App) -> None:
    a, b = app.providers["prov-a"], app.providers["prov-b"]
    on_a = [await place(app, quantity=100), await place(app, quantity=200)]
    on_b = await place(app, quantity=2000)  # beyond prov-a's max: prov-b
    a.set_status("9001", "Completed", remains=0)
    b.set_status(b.last_order, "In progress", remains=1500)

    answer = await app.call(action="status", orders=f"{on_a[0]},{on_a[1]},{on_b},77,x")
    assert {k: v.get("status", v.get("error")) for k, v in answer.items()} == {
        str(on_a[0]): "Completed", str(on_a[1]): "Pending", str(on_b): "In progress",
        "77": "Incorrect order ID", "x": "Incorrect order ID"}
    assert answer[str(on_b)]["remains"] == "1500"
    assert (a.calls["status"], b.calls["status"]) == (1, 1)
    assert a.requests[-1]["orders"] == "9001,9002"


async def test_partial_without_remains_refunds_what_the_answer_shows(app: App) -> None:
    topped_up_bob(app)
    prov = app.providers["prov-a"]
    order = await place(app, BOB, quantity=400)
    prov.set_status(prov.last_order, "Partial")
    prov.orders[prov.last_order].remains = None  # the provider sends no remains
    answer = await app.call(BOB, action="status", order=order)
    assert (answer["status"], answer["remains"], answer["charge"]) == (
        "Partial", "400", "0.00000")
    assert bob_balance(app) == TOPUP  # what the answer says was not charged, went back
