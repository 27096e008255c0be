"""Idempotency claims after a crash: a lease the owner renews, and what a retry
does once the lease has lapsed (answer from the order record, or place the
order anew only when it provably never went out)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gateway.actions.common import NOT_CONFIRMED
from gateway.errors import ClientError
from gateway.models import OrderRecord
from gateway.state.claims import Owned
from gateway.wire import OrderAnswer
from inprocess import BOB, State
from upstream import Reject

pytestmark = pytest.mark.anyio

ADD = {"service": 1, "link": "https://t.co/x", "quantity": 100, "idempotency_key": "k-1"}


async def dead_owner(s: State, order: int | None = None) -> int:
    """A replica took the claim for ADD (to place `order`) and died."""
    client = await s.client()
    fingerprint = await fingerprint_of(s)
    oid = order if order is not None else await s.r.orders.next_order_id()
    got = await s.r.claims.claim(client.name, "idem:k-1", fingerprint, 3600, oid)
    assert isinstance(got, Owned)
    s.clock.advance(s.r.claims.lease_s + 1)
    return oid


async def fingerprint_of(s: State) -> str:
    from gateway.routing.params import parse_add
    view = s.r.catalog.views[1]
    fields = {k: str(v) for k, v in ADD.items()}
    return parse_add(fields, "default", view.form).fingerprint()


def record(state: str, upstream: str | None = None) -> OrderRecord:
    return OrderRecord(client="alice", service=1, provider="prov-a", upstream_service="1",
                       link="https://t.co/x", quantity=100, charge=Decimal("0.1"),
                       cost=Decimal("0.05"), created=1, state=state,  # type: ignore[arg-type]
                       upstream_id=upstream)


async def test_a_retry_after_the_owner_died_answers_its_placed_order(state: State) -> None:
    s = state
    oid = await dead_owner(s)
    await s.r.orders.put_order(oid, record("placed", "9001"))
    assert await s.act("add", **ADD) == OrderAnswer(order=oid)
    assert await s.act("add", **ADD) == OrderAnswer(order=oid)  # and it is kept
    assert s.providers["prov-a"].calls["add"] == 0


async def test_a_retry_after_the_owner_died_mid_dispatch_is_not_confirmed(
        state: State) -> None:
    s = state
    oid = await dead_owner(s)
    await s.r.orders.put_order(oid, record("dispatching"))
    with pytest.raises(ClientError) as err:
        await s.act("add", **ADD)
    assert err.value.message == NOT_CONFIRMED
    assert sum(p.calls["add"] for p in s.providers.values()) == 0


async def test_a_retry_places_anew_when_the_dead_owner_never_recorded(state: State) -> None:
    s = state
    old = await dead_owner(s)
    answer = await s.act("add", **ADD)
    assert isinstance(answer, OrderAnswer) and answer.order != old
    assert s.providers["prov-a"].calls["add"] == 1
    tomb = (await s.r.orders.get_orders([old]))[old]
    assert tomb.state == "failed"
    # the owner comes back from its stall: the id is taken, it can never send it
    assert not await s.r.orders.create_order(old, record("dispatching"))
    assert await s.act("add", **ADD) == answer


async def test_a_late_owner_does_not_send_an_order_taken_over(state: State) -> None:
    s = state
    client = await s.client()
    oid = await s.r.orders.next_order_id()
    await s.r.orders.create_order(oid, record("failed"))  # a retry's tombstone
    with pytest.raises(ClientError):
        await s.actions.dispatcher.place(client, s.r.catalog.views[1],
                                         _request(s), oid)
    assert sum(p.calls["add"] for p in s.providers.values()) == 0


def _request(s: State):  # type: ignore[no-untyped-def]
    from gateway.routing.params import parse_add
    return parse_add({k: str(v) for k, v in ADD.items()}, "default", s.r.catalog.views[1].form)


async def test_the_owner_renews_its_lease_while_it_works(state: State) -> None:
    s = state
    s.r.claims.lease_s = 0.3  # renewed every 0.1 s (real time: the renewal sleeps)
    hold = s.providers["prov-a"].hold("add")
    first = asyncio.create_task(s.act("add", **ADD))
    await hold.entered.wait()
    key = "gw:{c:alice}:once:idem:k-1"
    taken = int(await s.r.redis.hget(key, "l"))
    s.clock.advance(10)  # the first lease is long over by the clock...
    for _ in range(50):  # ...but the owner renews it
        await asyncio.sleep(0.02)
        if int(await s.r.redis.hget(key, "l")) > taken:
            break
    assert int(await s.r.redis.hget(key, "l")) == int((s.clock.time() + 0.3) * 1000)
    hold.release.set()
    assert isinstance(await first, OrderAnswer)


async def test_a_temporary_error_is_not_replayed(state: State) -> None:
    s = state
    await s.r.ledger.credit("bob", Decimal("0.01"), "topup")
    with pytest.raises(ClientError, match="Not enough funds"):
        await s.act("add", BOB, **ADD)
    await s.r.ledger.credit("bob", Decimal("5"), "topup")
    answer = await s.act("add", BOB, **ADD)  # the same key, after the top-up
    assert isinstance(answer, OrderAnswer)


async def test_a_definite_error_is_replayed(state: State) -> None:
    s = state
    s.providers["prov-a"].fail("add", Reject("Incorrect link"))
    with pytest.raises(ClientError, match="Incorrect link"):
        await s.act("add", **ADD)
    with pytest.raises(ClientError, match="Incorrect link"):
        await s.act("add", **ADD)
    assert s.providers["prov-a"].calls["add"] == 1
