"""`add` over the mock transport: the record exists before the upstream call, and
the answer is exactly `{"order": N}`."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec
import pytest
import redis

from gateway.models import OrderRecord
from gateway.state import keys
from inprocess import BOB, App
from upstream import HttpStatus, Reject, Unreachable

pytestmark = pytest.mark.anyio

_record = msgspec.msgpack.Decoder(OrderRecord)


def stored_orders(client: redis.Redis) -> dict[int, OrderRecord]:
    """Every order record in Redis, read with a plain client (not the gateway's)."""
    found: dict[int, OrderRecord] = {}
    for bucket in client.scan_iter(match=keys.order_bucket(0).split("{")[0] + "*"):
        for oid, raw in client.hgetall(bucket).items():
            found[int(oid)] = _record.decode(raw)
    return found


async def test_add_writes_the_order_record_before_calling_upstream(
        app: App, sync_redis: redis.Redis) -> None:
    seen: list[dict[int, OrderRecord]] = []

    def on_add(fields: Mapping[str, str]) -> None:
        seen.append(stored_orders(sync_redis))

    app.providers["prov-a"].on_add = on_add
    response = await app.post(action="add", service=1, link="https://t.co/x", quantity=100)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"order":1000}'
    [before] = seen
    assert list(before) == [1000]
    rec = before[1000]
    assert (rec.state, rec.provider, rec.upstream_service, rec.link, rec.quantity,
            rec.upstream_id) == ("dispatching", "prov-a", "1", "https://t.co/x", 100, None)
    after = stored_orders(sync_redis)[1000]
    assert (after.state, after.upstream_id) == ("placed", app.providers["prov-a"].last_order)


async def test_add_ids_count_up_from_order_id_start(app: App) -> None:
    answers = [await app.call(action="add", service=2, link=f"https://t.co/{i}", quantity=50)
               for i in range(3)]
    assert answers == [{"order": 1000}, {"order": 1001}, {"order": 1002}]
    assert app.providers["prov-a"].calls["add"] == 3


async def test_add_refused_by_the_cheapest_goes_to_the_next(app: App,
                                                            sync_redis: redis.Redis) -> None:
    app.providers["prov-a"].fail("add", Reject("Not enough funds"))
    answer = await app.call(action="add", service=1, link="https://t.co/x", quantity=100)
    assert answer == {"order": 1000}
    assert stored_orders(sync_redis)[1000].provider == "prov-b"
    assert app.providers["prov-b"].orders[app.providers["prov-b"].last_order].quantity == 100


async def test_add_refused_everywhere_answers_unavailable_and_keeps_a_failed_record(
        app: App, sync_redis: redis.Redis) -> None:
    for p in app.providers.values():
        p.fail_always("add", Reject("Service disabled"))
    response = await app.post(action="add", service=1, link="https://t.co/x", quantity=100)
    assert response.status_code == 400
    assert response.json() == {"error": "Service is temporarily unavailable, try again later"}
    assert stored_orders(sync_redis)[1000].state == "failed"


async def test_add_unreachable_provider_goes_to_the_next(app: App,
                                                         sync_redis: redis.Redis) -> None:
    app.providers["prov-a"].fail_always("add", Unreachable())
    answer = await app.call(action="add", service=1, link="https://t.co/x", quantity=100)
    assert stored_orders(sync_redis)[answer["order"]].provider == "prov-b"
    assert app.providers["prov-a"].orders == {}
    assert app.providers["prov-a"].calls["add"] == 2  # it never left: tried once more


async def test_add_answered_500_is_never_sent_again(app: App, sync_redis: redis.Redis) -> None:
    """A 5xx to a write may have created the order: not retried, not sent elsewhere."""
    app.providers["prov-a"].fail("add", HttpStatus(500))
    response = await app.post(action="add", service=1, link="https://t.co/x", quantity=100)
    assert response.status_code == 400
    assert response.json() == {
        "error": "Order could not be confirmed; do not resend it, contact support"}
    assert (app.providers["prov-a"].calls["add"], app.providers["prov-b"].calls["add"]) == (1, 0)
    assert stored_orders(sync_redis)[1000].state == "unknown"


async def test_add_by_a_prepaid_client_without_funds_is_refused_before_upstream(
        app: App) -> None:
    response = await app.post(BOB, action="add", service=1, link="https://t.co/x", quantity=100)
    assert response.json() == {"error": "Not enough funds on balance"}
    assert sum(p.calls["add"] for p in app.providers.values()) == 0


async def test_add_refused_everywhere_gives_a_prepaid_client_its_money_back(app: App) -> None:
    app.in_app(app.resources.ledger.credit, "bob", Decimal("1"), "topup")
    for p in app.providers.values():
        p.fail_always("add", Reject("Not enough funds"))
    response = await app.post(BOB, action="add", service=1, link="https://t.co/x", quantity=100)
    assert response.status_code == 400
    assert app.in_app(app.resources.ledger.balance, "bob") == Decimal("1.00000")
    assert [e.type for e in app.in_app(app.resources.ledger.history, "bob")] == [
        "topup", "charge", "release"]


@pytest.mark.parametrize(("stall_s", "sent"), [(60.0, True), (60.5, False)])
async def test_an_order_recorded_too_late_after_its_reservation_is_not_sent(
        app: App, monkeypatch: pytest.MonkeyPatch, stall_s: float, sent: bool) -> None:
    """The reconciler may release a reservation with no record once 120 s have passed
    (PENDING_GRACE_S); a replica that stalls more than half of that between reserving
    and writing the record fails the order instead of sending it: money and order
    never disagree. At exactly half it still sends."""
    app.in_app(app.resources.ledger.credit, "bob", Decimal("1"), "topup")
    ledger, orders = app.resources.ledger, app.resources.orders
    create_order = orders.create_order

    async def stalled_create(order_id: int, record: OrderRecord) -> bool:
        app.clock.advance(stall_s)  # the replica stalls after the reservation
        return await create_order(order_id, record)

    monkeypatch.setattr(orders, "create_order", stalled_create)
    response = await app.post(BOB, action="add", service=1, link="https://t.co/x", quantity=100)
    if sent:
        assert response.json() == {"order": 1000}
        assert app.providers["prov-a"].calls["add"] == 1
        assert app.in_app(ledger.balance, "bob") == Decimal("0.92500")
        return
    assert response.json() == {
        "error": "Service is temporarily unavailable, try again later"}
    assert sum(p.calls["add"] for p in app.providers.values()) == 0
    assert app.in_app(ledger.balance, "bob") == Decimal("1.00000")
    assert [e.type for e in app.in_app(ledger.history, "bob")] == ["topup", "charge", "release"]
