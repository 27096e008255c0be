"""The prepaid ledger (`gateway.state.ledger`) on a real Redis, with every amount
written out: each movement is one entry, a reservation leaves a pending mark, a
settlement happens once, a lost reservation is charged once."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from gateway.state.ledger import Entry, Pending
from inprocess import State

pytestmark = pytest.mark.anyio
T = 1_800_000_000.0  # the ManualClock's start


def rows(entries: list[Entry]) -> list[tuple[str, str, str, str, str, float]]:
    return [(e.type, str(e.amount), str(e.balance), e.order, e.note, e.t) for e in entries]


async def test_movements_are_entries_with_their_balance(state: State) -> None:
    ledger = state.r.ledger
    assert str(await ledger.balance("erin")) == "0.00000"
    assert await ledger.credit("erin", Decimal("1.5"), "topup", note="by hand") is True
    state.clock.advance(1.25)
    assert await ledger.reserve("erin", Decimal("0.075"), 1000) is True
    assert await ledger.reserve("erin", Decimal("1.42501"), 1001) is False, "short by 0.00001"
    assert str(await ledger.balance("erin")) == "1.42500"
    assert await ledger.pending("erin") == [Pending(1000, Decimal("0.07500"), 1_800_000_001_250)]
    state.clock.advance(1)
    assert await ledger.credit("erin", Decimal("0.03"), "refund", 1000, settle=True) is True
    assert await ledger.credit("erin", Decimal("0.03"), "refund", 1000, settle=True) is False
    assert await ledger.pending("erin") == [], "the settlement settles the reservation"
    assert await ledger.settled("erin") == {1000: "refund"}
    assert str(await ledger.balance("erin")) == "1.45500"
    history = rows(await ledger.history("erin"))
    assert history == [
        ("topup", "1.50000", "1.50000", "", "by hand", T),
        ("charge", "-0.07500", "1.42500", "1000", "", T + 1.25),
        ("refund", "0.03000", "1.45500", "1000", "", T + 2.25),
    ]
    assert rows(await ledger.recent("erin", 2)) == history[:0:-1]
    ids = [e.id for e in await ledger.history("erin")]
    assert all(re.fullmatch(r"\d+-\d+", i) for i in ids) and len(set(ids)) == 3, ids
    assert [e.id for e in await ledger.recent("erin", 3)] == ids[::-1]
    assert await ledger.check("erin") == (Decimal("1.45500"), Decimal("1.45500"))


async def test_a_credit_without_settle_moves_every_time(state: State) -> None:
    ledger = state.r.ledger
    for _ in range(2):
        assert await ledger.credit("fay", Decimal("-0.5"), "adjust", 7) is True
    assert str(await ledger.balance("fay")) == "-1.00000"
    assert await ledger.settled("fay") == {}


async def test_a_lost_reservation_is_charged_once(state: State) -> None:
    ledger = state.r.ledger
    await ledger.credit("gus", Decimal("1"), "topup")
    await ledger.reserve("gus", Decimal("0.2"), 1000)
    assert await ledger.charge_once("gus", Decimal("0.2"), 1000, "replay") is False
    assert await ledger.charge_once("gus", Decimal("0.3"), 1001, "replay") is True
    assert await ledger.charge_once("gus", Decimal("0.3"), 1001, "replay") is False
    assert str(await ledger.balance("gus")) == "0.50000"
    assert rows(await ledger.recent("gus", 1)) == [
        ("charge", "-0.30000", "0.50000", "1001", "replay", T)]


async def test_forgetting_pending_marks(state: State) -> None:
    ledger = state.r.ledger
    await ledger.credit("hal", Decimal("1"), "topup")
    await ledger.reserve("hal", Decimal("0.1"), 1000)
    await ledger.reserve("hal", Decimal("0.2"), 1001)
    await ledger.forget_pending("hal", [])
    assert sorted(p.order for p in await ledger.pending("hal")) == [1000, 1001]
    await ledger.forget_pending("hal", [1000])
    assert await ledger.pending("hal") == [Pending(1001, Decimal("0.20000"), 1_800_000_000_000)]
