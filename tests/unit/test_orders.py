"""`refill`, `refill_status` and `cancel` route to the provider that holds each order
and answer with gateway ids."""

from __future__ import annotations

import pytest

from gateway.state import keys
from gateway.state.connect import connect
from gateway.state.orders import ID_BLOCK, ROLLBACK_GAP, Orders
from inprocess import BOB, App

pytestmark = pytest.mark.anyio


async def place(app: App, quantity: int = 100, key: str = "alice-key") -> int:
    answer = await app.call(key, action="add", service=1, link="https://t.co/x",
                            quantity=quantity)
    order: int = answer["order"]
    return order


async def test_refill_gets_a_gateway_id_and_its_status_follows_upstream(app: App) -> None:
    prov = app.providers["prov-a"]
    order = await place(app)
    assert await app.call(action="refill", order=order) == {"refill": 500}
    assert prov.requests[-1]["order"] == prov.last_order
    assert await app.call(action="refill_status", refill=500) == {"status": "Pending"}

    [(upstream_refill, (upstream_order, _))] = prov.refills.items()
    prov.refills[upstream_refill] = (upstream_order, "Completed")
    assert await app.call(action="refill_status", refill=500) == {"status": "Completed"}
    calls = prov.calls["refill_status"]
    assert await app.call(action="refill_status", refill=500) == {"status": "Completed"}
    assert prov.calls["refill_status"] == calls  # a final refill status is not asked again


async def test_multi_refill_and_refill_status_across_providers(app: App) -> None:
    on_a, on_b = await place(app), await place(app, quantity=2000)
    answer = await app.call(action="refill", orders=f"{on_a},{on_b},5")
    assert [item["order"] for item in answer] == [on_a, on_b, 5]
    assert answer[2]["refill"] == {"error": "Incorrect order ID"}
    ids = [answer[0]["refill"], answer[1]["refill"]]
    assert sorted(ids) == [500, 501]
    assert (app.providers["prov-a"].calls["refill"], app.providers["prov-b"].calls["refill"]) \
        == (1, 1)

    statuses = await app.call(action="refill_status", refills=f"{ids[0]},{ids[1]},9")
    assert statuses == [{"refill": ids[0], "status": "Pending"},
                        {"refill": ids[1], "status": "Pending"},
                        {"refill": 9, "status": {"error": "Refill not found"}}]


async def test_refill_of_another_clients_order_is_not_found(app: App) -> None:
    order = await place(app)
    response = await app.post(BOB, action="refill", order=order)
    assert response.json() == {"error": "Incorrect order ID"}
    assert app.providers["prov-a"].calls["refill"] == 0


async def test_cancel_answers_a_list_and_reaches_each_provider(app: App) -> None:
    a, b = app.providers["prov-a"], app.providers["prov-b"]
    on_a, on_b = await place(app), await place(app, quantity=2000)
    answer = await app.call(action="cancel", orders=f"{on_a},{on_b},x")
    assert answer == [{"order": on_a, "cancel": 1}, {"order": on_b, "cancel": 1},
                      {"order": "x", "cancel": {"error": "Incorrect order ID"}}]
    assert (a.canceled, b.canceled) == ([a.last_order], [b.last_order])
    single = await app.call(action="cancel", order=on_a)
    assert single == [{"order": on_a, "cancel": 1}]


async def test_an_id_counter_that_went_back_never_hands_an_id_out_twice(
        redis_url: str) -> None:
    """A failover to a replica that missed the last INCRBY, or a Redis restarted from
    an older file: the counter answers below ids this process handed out."""
    orders = Orders(connect(redis_url))
    try:
        first = [await orders.next_order_id() for _ in range(ID_BLOCK)]
        await orders.redis.set(keys.ORDER_SEQ, 0)  # the writes that raised it are lost
        after = [await orders.next_order_id() for _ in range(3)]
        assert min(after) > max(first) + ROLLBACK_GAP - 1
        refills = await orders.new_refill_ids(5)
        await orders.redis.set(keys.REFILL_SEQ, 0)
        assert min(await orders.new_refill_ids(2)) > max(refills)
    finally:
        await orders.redis.aclose()


async def test_another_server_at_the_address_moves_the_counters_past_this_process(
        redis_url: str) -> None:
    """A new replication id (`moved`): the rest of the block is dropped, and the
    counter is raised past every id handed out before the next is taken, even when
    it did not go back as far as this process can see (other replicas' blocks)."""
    orders = Orders(connect(redis_url))
    try:
        handed = await orders.next_order_id()
        orders.ids.moved()
        nxt = await orders.next_order_id()
        assert nxt > handed + ROLLBACK_GAP
    finally:
        await orders.redis.aclose()
