"""Order rescue (`gateway.actions.rescue`): a stalled order is cancelled at its provider
and, once the cancel is confirmed with nothing delivered, placed at the next candidate
under the same gateway id; anything ambiguous stops and flags it. Real Redis, fake
providers, a manual clock: the job's rounds are driven with `run_once`."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import yaml

from gateway.actions import Actions
from gateway.admin import queries
from gateway.config import check_text
from gateway.ops.show import order_lines
from gateway.state import keys
from gateway.wire import StatusAnswer
from inprocess import BOB, State, config_text
from upstream import HttpStatus, Reject

pytestmark = [pytest.mark.anyio,
              # the job's own loop never wakes during a test: rounds are the test's
              pytest.mark.gateway(rescue_after_s=60, rescue_every_s=3600)]

QTY = 100
CHARGE = Decimal("0.07500")  # 100 at prov-a's 0.50 x markup 1.5 per 1000
REFUND = Decimal("0.03000")  # a Partial with 40 of the 100 left: 40 % of the charge


async def stalled(state: State) -> tuple[int, str]:
    """Bob's order of service 1, placed at prov-a (cheapest); its upstream id."""
    await state.r.ledger.credit("bob", Decimal("10"), "topup")
    order, rec = await state.add(BOB, service=1, link="https://t.co/stall", quantity=QTY)
    assert rec.provider == "prov-a" and rec.upstream_id is not None
    return order, rec.upstream_id


async def status(state: State, order: int) -> StatusAnswer:
    answer = await state.act("status", BOB, order=order)
    assert isinstance(answer, StatusAnswer)
    return answer


async def whats(state: State, order: int) -> list[str]:
    return [c.what for c in (await state.r.history.read([order])).get(order, [])]


async def test_a_stalled_order_moves_to_the_next_candidate_under_the_same_id(
        state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    balance = await state.r.ledger.balance("bob")
    rescuer = state.actions.rescuer
    assert await rescuer.run_once() == 0, "not due before rescue_after_s"
    state.clock.advance(61)
    assert await rescuer.run_once() == 1
    assert a.canceled == [uid_a] and b.calls["add"] == 1
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.provider, rec.upstream_service, rec.state) == ("prov-b", "11", "placed")
    assert rec.upstream_id == b.last_order
    assert rec.cost == Decimal("0.08000")  # the new provider's cost: 100 at 0.80
    assert rec.charge == CHARGE
    assert b.requests[-1]["link"] == "https://t.co/stall"
    assert b.requests[-1]["quantity"] == str(QTY)
    # the panel's order goes on: answers come from the new placement
    assert (await status(state, order)).status == "Pending"
    b.set_status(b.last_order, "In progress", remains=40, start_count=7)
    answer = await status(state, order)
    assert (answer.status, answer.remains, answer.start_count) == ("In progress", "40", "7")
    assert answer.charge == "0.07500"
    assert await state.r.ledger.balance("bob") == balance, "the client's charge stands"
    assert await state.r.ledger.settled("bob") == {}, "no refund for the old placement"
    # a Partial at the new provider refunds as any order does, once
    b.set_status(b.last_order, "Partial", remains=40)
    await status(state, order)
    assert await state.r.ledger.balance("bob") == balance + REFUND
    steps = await whats(state, order)
    assert steps[:5] == ["Pending", "rescue_cancel_requested", "Canceled", "rescue_canceled",
                         "replaced -> prov-b"], steps
    assert steps[5:] == ["Pending", "In progress", "Partial"]
    detail = await queries.order(state.r, order)
    assert detail is not None and detail["flagged"] is None
    assert detail["rescue"]["prior"] == [{"provider": "prov-a", "upstream_service": "1",
                                          "upstream_id": uid_a, "cost": "0.05000",
                                          "outcome": "Canceled"}]
    assert detail["cost"] == "0.08000"
    # the new provider counts the order from its start (the old one's cancel counts there)
    card_b = await state.r.scores.scorecard("prov-b", "11")
    assert card_b.as_json()["n"] > 0


async def test_at_most_one_rescue_per_order(state: State) -> None:
    b = state.providers["prov-b"]
    order, _ = await stalled(state)
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    state.clock.advance(3600)  # stalled at prov-b too
    assert await state.actions.rescuer.run_once() == 0
    assert b.calls["cancel"] == 0
    assert await state.r.redis.zcard(keys.RESCUE_DUE) == 0


async def test_a_refused_cancel_stops_and_flags_the_order(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    balance = await state.r.ledger.balance("bob")
    a.fail_always("cancel", Reject("Cancel is disabled for this service"))
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 0, "no second add without a confirmed cancel"
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.provider, rec.upstream_id, rec.state) == ("prov-a", uid_a, "placed")
    assert (await status(state, order)).status == "Pending"
    detail = await queries.order(state.r, order)
    assert detail is not None and "cancel refused" in detail["flagged"]
    assert "rescue_stopped -> cancel refused" in " ".join(await whats(state, order))
    shown = "\n".join(await order_lines(state.r.redis, order))  # `orders show`
    assert "rescue_stopped -> cancel refused: Cancel is disabled" in shown, shown
    assert await state.r.ledger.balance("bob") == balance
    state.clock.advance(3600)
    assert await state.actions.rescuer.run_once() == 0, "a stopped rescue stays stopped"


async def test_an_unanswered_cancel_stops_and_flags_the_order(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    a.fail_always("cancel", HttpStatus(502))
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 0
    detail = await queries.order(state.r, order)
    assert detail is not None and "cancel unanswered" in detail["flagged"]


async def test_a_delivery_seen_after_the_cancel_stops_and_flags(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    balance = await state.r.ledger.balance("bob")
    take = a._cancel_of

    def partly(oid: str) -> int | dict[str, str]:  # it had delivered 60 meanwhile
        answer = take(oid)
        a.set_status(oid, "Partial", remains=40, start_count=5)
        return answer

    a._cancel_of = partly  # type: ignore[method-assign]
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 0
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.provider, rec.upstream_id, rec.status) == ("prov-a", uid_a, "Partial")
    detail = await queries.order(state.r, order)
    assert detail is not None and "delivery after the cancel" in detail["flagged"]
    # the old placement's Partial is refunded like any
    assert await state.r.ledger.balance("bob") == \
        balance + REFUND


async def test_still_pending_after_an_accepted_cancel_waits_then_flags(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    a._cancel_of = lambda oid: 1  # type: ignore[method-assign,assignment,return-value]
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert (await status(state, order)).status == "Pending"
    detail = await queries.order(state.r, order)
    assert detail is not None and detail["flagged"] is None  # waiting, bounded
    state.clock.advance(3601)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 0
    detail = await queries.order(state.r, order)
    assert detail is not None and "still Pending" in detail["flagged"]
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.provider, rec.upstream_id, rec.state) == ("prov-a", uid_a, "placed")


async def test_an_unknown_add_outcome_at_the_next_candidate_is_unknown(state: State) -> None:
    b = state.providers["prov-b"]
    order, _ = await stalled(state)
    b.fail("add", HttpStatus(500))
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 1
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.state, rec.provider) == ("unknown", "prov-b")
    assert order in await state.r.orders.unknown_orders()
    detail = await queries.order(state.r, order)
    assert detail is not None and "unconfirmed" in detail["flagged"] and detail["resolvable"]
    state.clock.advance(3600)
    await state.actions.rescuer.run_once()
    assert b.calls["add"] == 1, "never sent twice"


async def test_a_started_order_is_not_rescued(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, uid_a = await stalled(state)
    a.set_status(uid_a, "Pending", start_count=1200)  # the provider took it on
    a.set_status(uid_a, "In progress", remains=90)
    state.clock.advance(61)
    assert await state.actions.rescuer.run_once() == 1
    assert a.calls["cancel"] == 0 and b.calls["add"] == 0
    assert await state.r.redis.zcard(keys.RESCUE_DUE) == 0
    assert (await state.r.rescues.get([order])) == {}, "nothing kept for it"


async def test_a_stall_seen_only_now_is_polled_fresh_before_acting(state: State) -> None:
    a = state.providers["prov-a"]
    order, uid_a = await stalled(state)
    await status(state, order)  # the record says Pending
    a.set_status(uid_a, "In progress", remains=50)  # ... but it started since
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    assert a.calls["cancel"] == 0


async def test_two_replicas_rescue_an_order_once(state: State) -> None:
    a, b = state.providers["prov-a"], state.providers["prov-b"]
    order, _ = await stalled(state)
    other = Actions(state.r)  # a second replica over the same Redis
    try:
        state.clock.advance(61)
        looked = await asyncio.gather(state.actions.rescuer.run_once(),
                                      other.rescuer.run_once())
        assert sorted(looked) == [0, 1]
        looked = await asyncio.gather(state.actions.rescuer.run_once(),
                                      other.rescuer.run_once())
    finally:
        await other.aclose()
    assert a.calls["cancel"] == 1 and b.calls["add"] == 1
    rec = (await state.r.orders.get_orders([order]))[order]
    assert rec.provider == "prov-b"


@pytest.mark.gateway(rescue_after_s=0, rescue_every_s=3600)
async def test_rescue_off_watches_nothing(state: State) -> None:
    await stalled(state)
    assert await state.r.redis.zcard(keys.RESCUE_DUE) == 0


async def test_a_poll_out_while_the_order_moves_neither_refunds_nor_undoes_it(
        state: State) -> None:
    a = state.providers["prov-a"]
    order, _ = await stalled(state)
    balance = await state.r.ledger.balance("bob")
    hold = a.hold("status")
    poll = asyncio.create_task(status(state, order))  # read the record: placed at prov-a
    await hold.entered.wait()
    state.clock.advance(61)
    await state.actions.rescuer.run_once()  # cancelled at prov-a, placed at prov-b
    hold.release.set()
    answer = await poll  # prov-a answers this poll "Canceled" only now
    assert answer.status == "Pending" and answer.charge == "0.07500"
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.provider, rec.state, rec.status) == ("prov-b", "placed", None)
    assert await state.r.ledger.balance("bob") == balance
    assert await state.r.ledger.settled("bob") == {}


async def test_a_round_stopped_mid_add_never_sends_it_again(state: State) -> None:
    b = state.providers["prov-b"]
    order, _ = await stalled(state)
    hold = b.hold("add")
    state.clock.advance(61)
    round_ = asyncio.create_task(state.actions.rescuer.run_once())
    await hold.entered.wait()
    round_.cancel()  # the replica dies with the add out
    with pytest.raises(asyncio.CancelledError):
        await round_
    hold.release.set()
    await state.actions.rescuer.run_once()  # too early to call it
    assert (await state.r.orders.get_orders([order]))[order].state == "dispatching"
    state.clock.advance(61)
    await state.actions.rescuer.run_once()
    rec = (await state.r.orders.get_orders([order]))[order]
    assert (rec.state, rec.provider) == ("unknown", "prov-b")
    assert b.calls["add"] == 1
    detail = await queries.order(state.r, order)
    assert detail is not None and "unconfirmed" in detail["flagged"]


def test_rescue_settings_are_checked() -> None:
    config = yaml.safe_load(config_text(rescue_every_s=0, max_rescues=-1))
    config["services"][0]["rescue_after_s"] = -5
    settings, problems = check_text(yaml.safe_dump(config), "p.yaml", {})
    assert settings is None
    text = "\n".join(problems)
    assert "rescue_every_s" in text and "max_rescues" in text and "rescue_after_s" in text
