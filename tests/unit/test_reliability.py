"""An order once dispatched is never lost or re-invited; no money without a record.

- Redis gone after the provider answered: the outcome goes to the journal, the
  client gets the truth ({"order": N} or NOT_CONFIRMED, never a retry), and the
  replay puts it into Redis.
- A reservation no record explains (a crash in between) is released by the
  reconciler; `keys check` reports such charges until then.
- No ledger entry for an order that no candidate could be tried for.

Each outage test runs its own embedded redis-server, so it can stop it mid-add.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from restartable import Server

from gateway.actions import Actions
from gateway.actions.common import NOT_CONFIRMED, UNAVAILABLE
from gateway.clock import ManualClock
from gateway.errors import ClientError
from gateway.models import OrderRecord
from gateway.ops.admin import keys_check
from gateway.state.journal import Journal, JournalEntry, read_segment
from gateway.state.recovery import PENDING_GRACE_S
from gateway.wire import OrderAnswer
from gateway.wiring import open_resources
from inprocess import BOB, State, make_settings
from upstream import FakeProvider, HttpStatus, Reject, transport_for

pytestmark = pytest.mark.anyio

ADD = {"service": 1, "link": "https://t.co/x", "quantity": 100}


@asynccontextmanager
async def gateway(url: str, data: Path, providers: dict[str, FakeProvider],
                  clock: ManualClock) -> AsyncIterator[State]:
    async with open_resources(make_settings(), url, journal_dir=data / "journal",
                              transport=transport_for(providers), clock=clock) as r:
        actions = Actions(r)
        try:
            yield State(r, actions, clock, providers)
        finally:
            await actions.aclose()


def stop_redis_when_add_is_sent(provider: FakeProvider, server: Server,
                                outcome: HttpStatus | Reject | None = None) -> None:
    """The provider receives the add, Redis goes away, then the provider answers."""
    handle = provider.handle

    async def handle_then_lose_redis(request: httpx.Request) -> httpx.Response:
        if b"action=add" in request.content:
            server.stop()
            if outcome is not None:
                provider.fail("add", outcome)
        return await handle(request)

    provider.handle = handle_then_lose_redis  # type: ignore[method-assign]


async def topup(s: State, amount: str) -> None:
    await s.r.ledger.credit("bob", Decimal(amount), "topup")


# --- the journal --------------------------------------------------------------------


async def test_placed_while_redis_goes_away_answers_the_order_and_replays_it(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    stop_redis_when_add_is_sent(providers["prov-a"], server)
    async with gateway(server.url, tmp_path, providers, clock) as s:
        answer = await s.act("add", **ADD)
        assert isinstance(answer, OrderAnswer)  # the truth, not "try again"
        oid = answer.order
        assert providers["prov-a"].calls["add"] == 1
        assert s.r.recovery.journal.waiting
        server.restart()
        before = (await s.r.orders.get_orders([oid]))[oid]
        assert before.state == "dispatching"  # written before the add was sent
        early = await s.act("status", order=oid)  # the id the client was given is known
        assert early.status == "Pending"  # type: ignore[union-attr]
        assert await s.r.recovery.replay() == 1
        after = (await s.r.orders.get_orders([oid]))[oid]
        assert (after.state, after.upstream_id) == ("placed", providers["prov-a"].last_order)
        assert await s.r.orders.unknown_orders() == {}
        assert not s.r.recovery.journal.waiting
        assert list((tmp_path / "journal").glob("*.journal")) == []
        status = await s.act("status", order=oid)
        assert status.status == "Pending"  # type: ignore[union-attr]


async def test_placed_with_an_idempotency_key_while_redis_goes_away_answers_the_order(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    stop_redis_when_add_is_sent(providers["prov-a"], server)
    async with gateway(server.url, tmp_path, providers, clock) as s:
        answer = await s.act("add", **ADD, idempotency_key="k-7")
        assert isinstance(answer, OrderAnswer)  # the claim could not be finished: no 503
        server.restart()
        await s.r.recovery.replay()
        clock.advance(s.r.claims.lease_s + 1)  # the claim was never finished: it lapses
        assert await s.act("add", **ADD, idempotency_key="k-7") == answer
        assert providers["prov-a"].calls["add"] == 1


async def test_ambiguous_while_redis_goes_away_answers_not_confirmed(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    stop_redis_when_add_is_sent(providers["prov-a"], server, HttpStatus(502))
    async with gateway(server.url, tmp_path, providers, clock) as s:
        with pytest.raises(ClientError) as err:
            await s.act("add", **ADD)
        assert err.value.message == NOT_CONFIRMED  # never an answer that invites a resend
        server.restart()
        await s.r.recovery.replay()
        [(oid, rec)] = (await s.r.orders.unknown_orders()).items()
        assert rec.state == "unknown"
        assert sum(p.calls["add"] for p in providers.values()) == 1


async def test_refused_while_redis_goes_away_gives_the_money_back_on_replay(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    stop_redis_when_add_is_sent(providers["prov-a"], server, Reject("Incorrect link"))
    async with gateway(server.url, tmp_path, providers, clock) as s:
        await topup(s, "1")
        with pytest.raises(ClientError, match="Incorrect link"):
            await s.act("add", BOB, **ADD)
        server.restart()
        assert await s.r.ledger.balance("bob") < Decimal(1)  # reserved, not yet back
        assert await s.r.recovery.replay() == 1
        assert await s.r.ledger.balance("bob") == Decimal(1)
        assert [e.type for e in await s.r.ledger.history("bob")] == [
            "topup", "charge", "release"]
        assert await s.r.ledger.pending("bob") == []
        assert (await keys_check(s.r.redis, "bob"))[0]


async def test_a_dead_process_journal_is_replayed_at_start(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    async with gateway(server.url, tmp_path, providers, clock) as s:
        oid = await s.r.orders.next_order_id()
        record = OrderRecord(client="alice", service=1, provider="prov-a",
                             upstream_service="1", link="https://t.co/x", quantity=100,
                             charge=Decimal("0.1"), cost=Decimal("0.05"), created=1)
        assert await s.r.orders.create_order(oid, record)
    dead = Journal(tmp_path / "journal")  # another process: appends, then dies
    dead.open()
    placed = OrderRecord(**{**{f: getattr(record, f) for f in record.__struct_fields__},
                            "state": "placed", "upstream_id": "77"})
    dead.append(JournalEntry(oid, placed))
    dead.own_segments()
    dead.close()  # its lock is let go (as a crash would), its segment stays
    async with gateway(server.url, tmp_path, providers, clock) as s:
        rec = (await s.r.orders.get_orders([oid]))[oid]
        assert (rec.state, rec.upstream_id) == ("placed", "77")
    assert list((tmp_path / "journal").iterdir()) == []


async def test_a_journal_is_replayed_only_into_the_redis_it_belongs_to(
        server: Server, redis_url: str, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    """The same data dir, another REDIS_URL: entries written for the first Redis are
    set aside (journal/foreign/), never replayed into the second (main of dc7389a
    replayed them: order ids of another sequence in the wrong store)."""
    record = OrderRecord(client="alice", service=1, provider="prov-a", upstream_service="1",
                         link="https://t.co/x", quantity=100, charge=Decimal("0.1"),
                         cost=Decimal("0.05"), created=1, state="placed", upstream_id="77")
    async with gateway(server.url, tmp_path, providers, clock) as s:
        first_store = s.r.orders.store
        assert first_store
    dead = Journal(tmp_path / "journal")  # a process of the first Redis: appends, dies
    dead.open()
    dead.append(JournalEntry(424242, record, store=first_store))
    dead.own_segments()
    dead.close()
    async with gateway(redis_url, tmp_path, providers, clock) as s:  # another Redis
        assert s.r.orders.store not in ("", first_store)
        assert await s.r.orders.get_orders([424242]) == {}
        [aside] = s.r.recovery.journal.foreign()
        assert [e.order for e in read_segment(aside)] == [424242]
    async with gateway(server.url, tmp_path, providers, clock) as s:  # its own: kept aside
        assert await s.r.orders.get_orders([424242]) == {}
    aside.rename(tmp_path / "journal" / aside.name)  # the operator puts it back by hand
    async with gateway(server.url, tmp_path, providers, clock) as s:  # ... and it replays
        assert (await s.r.orders.get_orders([424242]))[424242].upstream_id == "77"
        assert s.r.recovery.journal.foreign() == []


async def test_a_replay_charges_a_reservation_a_failover_lost_and_only_that(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    """A prepaid order answered while its writes were not durable: after a failover
    that lost its reservation too, the replay charges it, once; an order whose
    reservation stands is not charged again."""
    async with gateway(server.url, tmp_path, providers, clock) as s:
        await topup(s, "10")
        kept, rec = await s.add(BOB, **ADD)  # reserved, placed: its charge stands
        store = s.r.orders.store
    lost = OrderRecord(**{**{f: getattr(rec, f) for f in rec.__struct_fields__},
                          "link": "https://t.co/lost", "upstream_id": "91"})
    dead = Journal(tmp_path / "journal")
    dead.open()
    dead.append(JournalEntry(kept + 100, lost, store=store, charge=rec.charge))
    dead.append(JournalEntry(kept, rec, store=store, charge=rec.charge))
    dead.own_segments()
    dead.close()
    async with gateway(server.url, tmp_path, providers, clock) as s:
        assert (await s.r.orders.get_orders([kept + 100]))[kept + 100].upstream_id == "91"
        charges = [e for e in await s.r.ledger.history("bob") if e.type == "charge"]
        assert sorted(int(e.order) for e in charges) == [kept, kept + 100]
        assert await s.r.ledger.balance("bob") == Decimal("10") - 2 * rec.charge
        ok, lines = await keys_check(s.r.redis, "bob")
        assert ok, lines


async def test_a_replay_never_writes_over_another_order_with_its_id(
        server: Server, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    """The id of a journaled order was handed out again (a counter a failover put
    back, before anything noticed): the replay keeps the order that stands, and
    the entry aside in journal/conflicts/."""
    async with gateway(server.url, tmp_path, providers, clock) as s:
        oid, rec = await s.add(**ADD)
        store = s.r.orders.store
    other = OrderRecord(**{**{f: getattr(rec, f) for f in rec.__struct_fields__},
                           "link": "https://t.co/other", "upstream_id": "55"})
    dead = Journal(tmp_path / "journal")
    dead.open()
    dead.append(JournalEntry(oid, other, store=store))
    dead.own_segments()
    dead.close()
    async with gateway(server.url, tmp_path, providers, clock) as s:
        standing = (await s.r.orders.get_orders([oid]))[oid]
        assert (standing.link, standing.upstream_id) == (rec.link, rec.upstream_id)
        [aside] = (tmp_path / "journal" / "conflicts").glob("*.journal")
        assert [e.record.link for e in read_segment(aside)] == ["https://t.co/other"]


def test_a_torn_frame_at_the_end_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    record = OrderRecord(client="a", service=1, provider="p", upstream_service="1", link="l",
                         quantity=1, charge=Decimal(1), cost=Decimal(1), created=1)
    journal.append(JournalEntry(1, record))
    journal.append(JournalEntry(2, record))
    [path] = journal.own_segments()
    path.write_bytes(path.read_bytes()[:-3])  # a crash in the middle of the second write
    assert [e.order for e in read_segment(path)] == [1]
    journal.close()


# --- reservations without a record ------------------------------------------------


async def test_reconciler_releases_a_reservation_no_record_explains(state: State) -> None:
    s = state
    await topup(s, "5")
    await s.r.ledger.reserve("bob", Decimal("2"), 4242)  # the replica died right here
    ok, lines = await keys_check(s.r.redis, "bob")
    assert ok  # in flight: not drift yet
    s.clock.advance(PENDING_GRACE_S + 1)
    assert await s.r.recovery.reconcile() == 1
    assert await s.r.ledger.balance("bob") == Decimal(5)
    release = (await s.r.ledger.history("bob"))[-1]
    assert (release.type, release.order, release.amount) == ("release", "4242", Decimal(2))
    assert "no order record" in release.note
    assert await s.r.ledger.pending("bob") == []
    assert await s.r.recovery.reconcile() == 0  # once


async def test_reconciler_leaves_reservations_that_a_record_explains(state: State) -> None:
    s = state
    await topup(s, "5")
    oid, _ = await s.add(BOB, **ADD)
    await s.r.ledger.reserve("bob", Decimal("1"), 999)  # young: maybe still on its way
    s.clock.advance(PENDING_GRACE_S / 2)
    assert await s.r.recovery.reconcile() == 0
    assert {p.order for p in await s.r.ledger.pending("bob")} == {999}
    assert await s.r.ledger.balance("bob") == Decimal(4) - (await s.r.orders.get_orders(
        [oid]))[oid].charge


async def test_a_failed_record_keeps_its_reservation_mark_until_the_release(
        state: State) -> None:
    """A replica killed after storing an order's failure and before releasing its
    reservation: the pending mark stays with the failed record, so the reconciler
    gives the money back (chaos found the charge kept for good when the record's write
    cleared the mark)."""
    s = state
    await topup(s, "5")
    await s.r.ledger.reserve("bob", Decimal("2"), 4243)
    failed = OrderRecord(client="bob", service=1, provider="prov-a", upstream_service="1",
                         link="https://t.co/x", quantity=100, charge=Decimal("2"),
                         cost=Decimal("1"), created=1, state="failed", ledger=True)
    await s.r.orders.put_order(4243, failed, settles=True)  # ... and killed right here
    assert {p.order for p in await s.r.ledger.pending("bob")} == {4243}
    s.clock.advance(PENDING_GRACE_S + 1)
    assert await s.r.recovery.reconcile() == 1
    assert await s.r.ledger.balance("bob") == Decimal(5)
    assert "the order failed" in (await s.r.ledger.history("bob"))[-1].note
    ok, lines = await keys_check(s.r.redis, "bob")
    assert ok, lines


async def test_keys_check_reports_a_charge_without_a_record(state: State) -> None:
    s = state
    await topup(s, "5")
    await s.r.ledger.reserve("bob", Decimal("2"), 4242)
    s.clock.advance(PENDING_GRACE_S + 1)
    await s.r.redis.hset("gw:{c:bob}:pending", "4242", "1:200000000")  # long ago
    ok, lines = await keys_check(s.r.redis, "bob")
    assert not ok, lines
    assert "  order 4242: charge 2.00000 without an order record" in lines, lines


async def test_the_reconciler_runs_on_one_replica_at_a_time(state: State) -> None:
    s = state
    await topup(s, "5")
    await s.r.ledger.reserve("bob", Decimal("2"), 4242)
    s.clock.advance(PENDING_GRACE_S + 1)
    await s.r.redis.set("gw:reconcile:lock", "someone-else")
    assert await s.r.recovery.reconcile() == 0
    await s.r.redis.delete("gw:reconcile:lock")
    assert await s.r.recovery.reconcile() == 1


async def test_every_breaker_open_leaves_no_ledger_entry(state: State) -> None:
    s = state
    await topup(s, "5")
    for p in ("prov-a", "prov-b"):
        for _ in range(3):
            await s.r.breakers.failure(p)
    with pytest.raises(ClientError) as err:
        await s.act("add", BOB, **ADD)
    assert err.value.message == UNAVAILABLE
    assert [e.type for e in await s.r.ledger.history("bob")] == ["topup"]
    assert sum(p.calls["add"] for p in s.providers.values()) == 0


# --- shutdown and cancelled requests ------------------------------------------------


async def test_a_cancelled_request_still_records_its_order(state: State) -> None:
    import asyncio

    s = state
    hold = s.providers["prov-a"].hold("add")
    request = asyncio.create_task(s.act("add", **ADD))
    await hold.entered.wait()
    request.cancel()  # the client hung up, or the server is shutting down
    hold.release.set()
    await s.actions.aclose()  # shutdown drains dispatches in flight
    [(oid, rec)] = (await s.r.orders.get_orders(range(1000, 1016))).items()
    assert (rec.state, rec.upstream_id) == ("placed", s.providers["prov-a"].last_order)


# --- reads while a provider's breaker is open -----------------------------------------


async def test_reads_answer_from_the_record_while_the_breaker_is_open(state: State) -> None:
    s = state
    oid, _ = await s.add(**ADD)
    refill = await s.act("refill", order=oid)
    status_calls = s.providers["prov-a"].calls["status"]
    s.clock.advance(31)  # past the status cache
    for _ in range(3):
        await s.r.breakers.failure("prov-a")
    assert await s.r.breakers.state("prov-a") == "open"
    status = await s.act("status", order=oid)
    assert status.status == "Pending"  # type: ignore[union-attr]
    assert await s.act("refill_status", refill=refill.refill) is not None  # type: ignore[union-attr]
    assert s.providers["prov-a"].calls["status"] == status_calls
    assert s.providers["prov-a"].calls["refill_status"] == 0
    balance_calls = s.providers["prov-a"].calls["balance"]
    await s.r.balances.refresh("prov-a")
    assert s.providers["prov-a"].calls["balance"] == balance_calls
    s.clock.advance(31)  # the cooldown is over: reads go again
    await s.act("status", order=oid)
    assert s.providers["prov-a"].calls["status"] == status_calls + 1
