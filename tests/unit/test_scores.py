"""Scorecards per provider service, from the gateway's own orders: fed by status polls
(single, multi and cached), refills and cancels; each event counted once across
replicas; decayed over `gateway.score_window_d`; shown by `route`, `catalog show`,
the admin data and the metrics."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway import metrics
from gateway.actions import Actions
from gateway.admin import queries
from gateway.ops.explain import route, show
from gateway.state.scores import Evidence, Scorecard
from inprocess import State
from upstream import Reject

pytestmark = pytest.mark.anyio
approx = pytest.approx


async def card(state: State, provider: str = "prov-a", service: str = "1") -> Scorecard:
    return await state.r.scores.scorecard(provider, service)


async def placed(state: State, quantity: int = 400) -> tuple[int, str]:
    order, rec = await state.add(service=1, link=f"https://t.co/{quantity}", quantity=quantity)
    return order, rec.upstream_id or ""


async def test_no_evidence_is_an_empty_card(state: State) -> None:
    empty = await card(state)
    assert (empty.n, empty.seen, empty.completed_share, empty.start_p50_s) == (0, 0, None, None)
    assert empty.summary() == "no evidence yet"


async def test_status_sequences_make_the_card(state: State) -> None:
    prov = state.providers["prov-a"]
    done, done_up = await placed(state, 400)
    part, part_up = await placed(state, 401)
    gone, gone_up = await placed(state, 402)
    await state.act("status", orders=f"{done},{part},{gone}")  # seen, all Pending
    assert (await card(state)).seen == approx(3)
    assert (await card(state)).n == 0

    state.clock.advance(300)
    prov.set_status(done_up, "In progress", remains=400, start_count=50)
    await state.act("status", orders=f"{done},{part},{gone}")
    state.clock.advance(300)  # 600 s
    prov.set_status(part_up, "Partial", remains=101)
    prov.set_status(gone_up, "Canceled", remains=402)
    await state.act("status", orders=f"{done},{part},{gone}")
    state.clock.advance(3000)  # 3600 s
    prov.set_status(done_up, "Completed", remains=0)
    await state.act("status", order=done)
    await state.act("status", orders=f"{done},{part},{gone}")  # all final: nothing new

    c = await card(state)
    rel = 1e-2  # the first events have decayed a little over the hour
    assert c.n == approx(3, rel=rel) and c.seen == approx(3, rel=rel)
    assert c.completed_share == approx(1 / 3, rel=rel)
    assert c.partial_share == approx(1 / 3, rel=rel)
    assert c.canceled_share == approx(1 / 3, rel=rel)
    assert c.delivered_mean == approx((1 + 300 / 401 + 0) / 3, rel=rel)
    assert c.started_share == approx(2 / 3, rel=rel)  # the canceled one never started
    assert c.start_mean_s == approx(450, rel=rel)  # 300 s and 600 s
    assert c.start_p50_s in (300, 900)  # bucket bounds; of two starts, either is the median
    assert c.complete_mean_s == approx(3600, rel=rel)
    assert "completed 33%" in c.summary()


async def test_each_event_counts_once_across_two_pollers(state: State) -> None:
    prov = state.providers["prov-a"]
    order, upstream = await placed(state)
    prov.set_status(upstream, "Completed", remains=0)
    other = Actions(state.r)  # a second replica over the same Redis
    try:
        hold = prov.hold("status")
        first = asyncio.create_task(state.act("status", order=order))
        await hold.entered.wait()  # read the record before the other replica wrote
        await other.table["status"](await state.client(), {"order": str(order)})
        hold.release.set()
        await first
    finally:
        await other.aclose()
    assert prov.calls["status"] == 2
    c = await card(state)
    assert (c.seen, c.n, c.completed_share, c.sums["ns"]) == (1, 1, 1, 1)


@pytest.mark.gateway(status_cache_s=30)
async def test_the_status_cache_adds_no_evidence(state: State) -> None:
    prov = state.providers["prov-a"]
    order, upstream = await placed(state)
    await state.act("status", order=order)
    prov.set_status(upstream, "Completed", remains=0)
    await state.act("status", order=order)  # answered from the cache
    assert (await card(state)).n == 0
    state.clock.advance(31)
    await state.act("status", order=order)
    assert (await card(state)).n == approx(1)


@pytest.mark.gateway(score_window_d=1)
async def test_evidence_decays_over_the_window(state: State) -> None:
    ev = Evidence()
    ev.add("prov-a", "1", nf=4, fc=4, dl=4)
    await state.r.scores.add(ev)
    state.clock.advance(86400)  # one window: e^-1
    c = await card(state)
    assert c.n == approx(4 / math.e) and c.completed_share == approx(1)
    ev = Evidence()
    ev.add("prov-a", "1", nf=1, fp=1, dl=0.5)
    await state.r.scores.add(ev)
    c = await card(state)
    assert c.n == approx(4 / math.e + 1)
    assert c.completed_share == approx((4 / math.e) / (4 / math.e + 1))
    assert c.delivered_mean == approx((4 / math.e + 0.5) / (4 / math.e + 1))
    state.clock.advance(86400 * 5)
    assert (await card(state)).n == approx((4 / math.e + 1) * math.exp(-5))


async def test_refills_and_cancels_are_counted(state: State) -> None:
    prov = state.providers["prov-a"]
    a, a_up = await placed(state, 400)
    b, b_up = await placed(state, 401)
    for up in (a_up, b_up):
        prov.set_status(up, "Completed", remains=0)
    await state.act("status", orders=f"{a},{b}")
    first = (await state.act("refill", order=a)).refill  # type: ignore[union-attr]
    second = (await state.act("refill", order=b)).refill  # type: ignore[union-attr]
    prov.fail("refill", Reject("Order cannot be refilled"))
    with pytest.raises(Exception, match="cannot be refilled"):
        await state.act("refill", order=a)
    done, rejected = list(prov.refills)
    prov.refills[done] = (a_up, "Completed")
    prov.refills[rejected] = (b_up, "Rejected")
    await state.act("refill_status", refills=f"{first},{second}")
    await state.act("refill_status", refills=f"{first},{second}")  # final: once

    c1, _ = await placed(state, 402)
    c2, _ = await placed(state, 403)
    await state.act("cancel", orders=str(c1))
    prov.fail("cancel", Reject("Order cannot be canceled"))
    await state.act("cancel", orders=str(c2))

    c = await card(state)
    assert (c.sums["rq"], c.sums["rr"], c.sums["ro"], c.sums["rf"]) == approx((2, 1, 1, 1))
    assert c.refill_requests == approx(3)
    assert c.refill_accepted_share == approx(2 / 3)
    assert c.refill_success_share == approx(0.5)
    assert c.cancel_requests == approx(2) and c.cancel_success_share == approx(0.5)


async def test_route_catalog_admin_and_metrics_show_the_card(state: State) -> None:
    prov = state.providers["prov-a"]
    order, upstream = await placed(state)
    await state.act("status", order=order)
    state.clock.advance(120)
    prov.set_status(upstream, "Partial", remains=100)
    await state.act("status", order=order)

    lines = await route(state.r, 1, 100, None)
    at = next(i for i, line in enumerate(lines) if line.startswith("  prov-a #1:"))
    assert lines[at + 1].startswith("      score: n 1.0, completed 0%, partial 100%")
    assert "delivered 75%" in lines[at + 1] and "start p50 <= 5m" in lines[at + 1]
    b_line = next(i for i, line in enumerate(lines) if line.startswith("  prov-b #11:"))
    assert lines[b_line + 1] == "      score: no evidence yet"

    shown = await show(state.r)
    assert any("prov-a" in x and "#1 " in x and "[n 1.0 completed 0% delivered 75%" in x
               for x in shown), shown

    data = {p["name"]: p for p in await queries.providers(state.r)}
    cards = {c["service"]: c for c in data["prov-a"]["scorecards"]}
    assert cards["1"]["delivered_mean"] == 0.75 and cards["1"]["n"] == 1.0
    assert data["prov-b"]["scorecards"][0]["n"] == 0

    labels = {"provider": "prov-a", "upstream_service": "1"}
    assert metrics.REGISTRY.get_sample_value("smm_score_delivered_fraction", labels) == 0.75
    assert metrics.REGISTRY.get_sample_value("smm_score_completed_share", labels) == 0.0
