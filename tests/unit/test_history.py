"""Every order's status history: appended only when something changed, bounded, kept
once across replicas, read back by the admin API and `smm-gateway orders show`, and
small (bytes per order measured with MEMORY USAGE)."""

from __future__ import annotations

import asyncio

import pytest
import redis
from test_admin import api, with_admin

from gateway.actions import Actions
from gateway.models import OrderRecord
from gateway.ops.cli import main
from gateway.ops.show import order_lines
from gateway.state import history, keys
from gateway.state.connect import connect
from gateway.state.history import MAX_BYTES, MAX_ENTRIES, Change, History
from gateway.state.orders import Orders
from inprocess import App, State

pytestmark = pytest.mark.anyio


async def poll(state: State, order: int) -> None:
    await state.act("status", order=order)


async def changes(state: State, order: int) -> list[Change]:
    return (await state.r.history.read([order])).get(order, [])


async def test_a_change_is_appended_once_and_only_a_change(state: State) -> None:
    order, rec = await state.add(service=1, link="https://t.co/a", quantity=400)
    prov = state.providers["prov-a"]
    assert await changes(state, order) == []
    placed = int(state.clock.time())

    await poll(state, order)
    state.clock.advance(60)
    await poll(state, order)  # nothing moved: nothing appended
    assert [(c.what, c.remains) for c in await changes(state, order)] == [("Pending", 400)]

    state.clock.advance(240)
    prov.set_status(rec.upstream_id or "", "In progress", remains=300, start_count=7)
    await poll(state, order)
    state.clock.advance(100)
    prov.set_status(rec.upstream_id or "", "In progress", remains=100)
    await poll(state, order)
    await poll(state, order)
    state.clock.advance(100)
    prov.set_status(rec.upstream_id or "", "Completed", remains=0)
    await poll(state, order)
    await poll(state, order)  # final: not asked again

    got = await changes(state, order)
    assert [(c.t - placed, c.what, c.start_count, c.remains) for c in got] == [
        (0, "Pending", 0, 400), (300, "In progress", 7, 300), (400, "In progress", 7, 100),
        (500, "Completed", 7, 0)]


async def test_the_history_is_bounded_first_and_newest_kept(state: State) -> None:
    order, rec = await state.add(service=1, link="https://t.co/b", quantity=1000)
    prov = state.providers["prov-a"]
    await poll(state, order)
    for left in range(990, 690, -10):  # 30 changes
        state.clock.advance(10)
        prov.set_status(rec.upstream_id or "", "In progress", remains=left,
                        start_count=123456789)
        await poll(state, order)
    got = await changes(state, order)
    assert len(got) <= MAX_ENTRIES
    assert (got[0].what, got[0].remains) == ("Pending", 1000)
    assert got[-1].remains == 700
    assert [c.remains for c in got[1:]] == sorted((c.remains for c in got[1:]), reverse=True)
    blob = await state.r.history.raw(order)
    assert blob is not None and len(blob) <= MAX_BYTES


async def test_two_replicas_seeing_one_change_record_it_once(state: State) -> None:
    order, rec = await state.add(service=1, link="https://t.co/c", quantity=400)
    prov = state.providers["prov-a"]
    await poll(state, order)
    prov.set_status(rec.upstream_id or "", "In progress", remains=350, start_count=1)
    other = Actions(state.r)  # a second replica over the same Redis
    try:
        hold = prov.hold("status")
        first = asyncio.create_task(state.act("status", order=order))
        await hold.entered.wait()  # this one read the record (Pending) and is asking
        await other.table["status"](await state.client(), {"order": str(order)})
        hold.release.set()
        await first
    finally:
        await other.aclose()
    assert [c.what for c in await changes(state, order)] == ["Pending", "In progress"]


async def test_refill_and_cancel_events_are_in_the_history(state: State) -> None:
    order, rec = await state.add(service=1, link="https://t.co/d", quantity=400)
    prov = state.providers["prov-a"]
    prov.set_status(rec.upstream_id or "", "Completed", remains=0)
    await poll(state, order)
    answer = await state.act("refill", order=order)
    refill = answer.refill  # type: ignore[union-attr]
    upstream_refill = next(iter(prov.refills))
    prov.refills[upstream_refill] = (rec.upstream_id or "", "Completed")
    await state.act("refill_status", refill=refill)
    await state.act("refill_status", refill=refill)
    other, _ = await state.add(service=1, link="https://t.co/e", quantity=400)
    await state.act("cancel", order=other)
    assert [(c.what, c.refill) for c in await changes(state, order)] == [
        ("Completed", None), ("refill requested", refill), ("refill completed", refill)]
    assert [c.what for c in await changes(state, other)] == ["cancel requested"]


async def test_orders_show_prints_routing_money_and_history(state: State,
                                                            sync_redis: redis.Redis) -> None:
    order, rec = await state.add(service=1, link="https://t.co/f", quantity=400)
    prov = state.providers["prov-a"]
    await poll(state, order)
    state.clock.advance(90)
    prov.set_status(rec.upstream_id or "", "In progress", remains=200, start_count=5)
    await poll(state, order)
    text = "\n".join(await order_lines(state.r.redis, order))
    assert f"order {order}: client alice" in text
    assert f"routing: prov-a service #1, upstream order {rec.upstream_id}" in text
    assert f"charge {rec.charge:.5f}, cost {rec.cost:.5f}" in text
    assert "+0:00:00  Pending (start 0, remains 400)" in text
    assert "+0:01:30  In progress (start 5, remains 200)" in text


@with_admin
async def test_the_admin_api_answers_an_orders_history(app: App) -> None:
    order = (await app.call(action="add", service=1, link="https://t.co/g",
                            quantity=400))["order"]
    prov = app.providers["prov-a"]
    await app.call(action="status", order=order)
    app.clock.advance(30)
    prov.set_status(prov.last_order, "Partial", remains=100)
    await app.call(action="status", order=order)
    found = (await api(app, "GET", f"/orders/{order}")).json()
    assert [(h["what"], h["remains"], h["after_s"]) for h in found["history"]] == [
        ("Pending", 400, 0), ("Partial", 100, 30)]
    card = found["scorecard"]
    assert (card["provider"], card["service"], card["partial_share"]) == ("prov-a", "1", 1.0)
    assert card["delivered_mean"] == 0.75


def realistic(i: int) -> OrderRecord:
    return OrderRecord(client="reseller-17", service=12, provider="prov-a",
                       upstream_service="4411", link=f"https://www.tiktok.com/@user{i}",
                       quantity=1000, charge=2, cost=1, created=1_800_000_000,
                       state="placed", upstream_id=str(81234567 + i), status="In progress",
                       start_count="18734", remains="400", currency="USD")


async def test_bytes_per_order(state: State, sync_redis: redis.Redis) -> None:
    """A full bucket of orders, each with 5 changes: what the history adds per order."""
    first = 128 * 100
    ids = list(range(first, first + 128))
    await state.r.orders.put_orders({i: realistic(i) for i in ids})
    t = 1_800_000_000
    steps = [("Pending", "0", "1000"), ("In progress", "18734", "1000"),
             ("In progress", "18734", "620"), ("In progress", "18734", "130"),
             ("Completed", "18734", "0")]
    for n, (status, start, remains) in enumerate(steps):
        entries = []
        for i in ids:
            rec = realistic(i)
            rec.status, rec.start_count, rec.remains = status, start, remains
            entries.append((i, history.status_entry(rec, t + 600 * n, history.SEEN)))
        await state.r.history.append(entries)
    record_bytes = sync_redis.memory_usage(keys.order_bucket(first)) or 0
    history_bytes = sync_redis.memory_usage(keys.history_bucket(first)) or 0
    print(f"\nper order: record {record_bytes / 128:.0f} B, history of 5 changes "
          f"{history_bytes / 128:.0f} B (blob {len(await state.r.history.raw(first) or b'')} B)")
    assert sync_redis.object("encoding", keys.history_bucket(first)) in (b"ziplist", b"listpack")
    assert history_bytes / 128 <= 100


def test_the_orders_show_command(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    async def seed() -> None:
        r = connect(redis_url)
        try:
            rec = realistic(1)
            await Orders(r).put_orders({4242: rec})
            await History(r).append([(4242, history.status_entry(rec, rec.created + 75))])
        finally:
            await r.aclose()

    asyncio.run(seed())
    monkeypatch.setenv("REDIS_URL", redis_url)
    with pytest.raises(SystemExit) as done:
        main(["orders", "show", "4242"])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "routing: prov-a service #4411, upstream order 81234568" in out
    assert "+0:01:15  In progress (start 18734, remains 400)" in out
    with pytest.raises(SystemExit) as missing:
        main(["orders", "show", "4243"])
    assert missing.value.code == 1 and "no order 4243" in capsys.readouterr().err
