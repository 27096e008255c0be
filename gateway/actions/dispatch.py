"""Placing one order: the dispatch loop over candidates and the order's states.

    dispatching --(provider took it)--------------> placed
         |------(may have reached it: timeout)----> unknown  (never re-sent)
         |------(definite refusal, or none left)--> failed   (reservation released)

Money and records move in this order, so a crash at any point leaves either
nothing, or a charge and a record (or pending mark) that explains it:

1. the first candidate that may be tried: the client's balance is reserved
   (with a pending mark, in one script; none of this when every breaker is
   open: no ledger entry for an order that was never tried);
2. the record is created (`dispatching`), once per id: a replica that lost its
   idempotency claim to a retry finds the id taken and never sends;
3. the upstream `add` is sent;
4. the outcome is stored. If Redis cannot take it, it goes to the local journal
   (`gateway.state.journal`) and the client still gets the truth: the order id,
   or NOT_CONFIRMED; never an answer that invites a retry of a placed order.

Only a definite rejection worth trying elsewhere, or a request that provably
never left, moves on to the next candidate; anything ambiguous stops the loop
and answers NOT_CONFIRMED (and raises an `order_unknown` alert: an operator must
resolve it). Every dispatch runs shielded from the request
(`guarded`): a client that hangs up, or a shutdown, never cuts it in half;
`aclose()` waits for the ones in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from decimal import Decimal
from typing import Any, Literal, TypeVar

from gateway import metrics, money
from gateway.actions.common import NOT_CONFIRMED, UNAVAILABLE
from gateway.clock import SYSTEM, Clock
from gateway.errors import ClientError, ProviderError, Rejected, StoreUnavailable, Unreachable
from gateway.events import NOOP, Alert, Events
from gateway.models import ATTEMPT_MESSAGE, Attempt, OrderRecord
from gateway.routing import decide
from gateway.routing.balances import Balances
from gateway.routing.params import AddRequest
from gateway.routing.plan import Candidate, usable
from gateway.routing.views import ServiceView
from gateway.state.breakers import Breakers
from gateway.state.clients import ClientRecord
from gateway.state.journal import Journal, JournalEntry
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders
from gateway.state.recovery import PENDING_GRACE_S
from gateway.state.stats import Tally
from gateway.upstream.classify import blame, is_funds, public_message
from gateway.upstream.client import ProviderClient
from gateway.wire import OrderAnswer

log = logging.getLogger("gateway.actions")

T = TypeVar("T")
Outcome = Literal["placed", "next", "unreachable", "refused", "unknown"]
FUNDS = "Not enough funds on balance"
Placed = Callable[[int, OrderRecord, ServiceView, AddRequest], Awaitable[None]]


class Dispatcher:
    def __init__(self, orders: Orders, ledger: Ledger, breakers: Breakers,
                 balances: Balances, providers: Mapping[str, ProviderClient],
                 journal: Journal, currency: str, clock: Clock = SYSTEM,
                 events: Events = NOOP) -> None:
        self._orders = orders
        self._events = events
        self._ledger = ledger
        self._breakers = breakers
        self._balances = balances
        self._providers = providers
        self._journal = journal
        self._currency = currency
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self.placed: Placed | None = None  # told of each order placed (the rescue's watch)

    @property
    def clock(self) -> Clock:
        return self._clock

    async def aclose(self) -> None:
        """Wait for the dispatches in flight and the background work (balance refreshes)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def guarded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end even if the request awaiting it is cancelled."""
        return await asyncio.shield(self._background(work))

    async def place(self, client: ClientRecord, view: ServiceView,
                    order: AddRequest, order_id: int) -> OrderAnswer:
        picked = decide.choices(view, order.quantity, order.runs, self._balances, client)
        if not usable(picked):
            log.warning("add: no candidate", extra={
                "service": view.id, "reasons": [c.reason for c in picked]})
            raise ClientError(UNAVAILABLE)
        charge = money.charge(client.rate(view.id, view.rate), order.quantity, order.runs)
        ledger = client.mode == "ledger"
        reserved: float | None = None  # monotonic time of the reservation
        tried: list[dict[str, str]] = []
        attempts: list[Attempt] = []  # stored with the record: the order page shows them
        record: OrderRecord | None = None
        async for verdict in decide.verdicts(picked, self._breakers, take=True):
            cand = verdict.candidate
            if verdict.reason is not None:
                tried.append({"provider": cand.provider, "outcome": verdict.reason})
                continue
            if ledger and reserved is None:
                if not await self._ledger.reserve(client.name, charge, order_id):
                    raise ClientError(FUNDS)
                reserved = self._clock.monotonic()
            first = record is None
            record = new_record(client, view, order, cand, charge, ledger,
                                self._clock.time(), self._currency, attempts)
            await self._begin(order_id, record, first, reserved)
            kind, value = await self.send(cand, order, verdict.probe)
            tried.append({"provider": cand.provider, "outcome": kind,
                          "probe": str(verdict.probe)})
            if kind != "placed":
                attempts.append(Attempt(cand.provider, cand.upstream.service,
                                        "refused" if kind == "next" else kind,
                                        value[:ATTEMPT_MESSAGE]))
            if kind == "placed":
                record.state, record.upstream_id = "placed", value
                metrics.order_placed(record)
                sent = sum(1 for t in tried if "probe" in t)
                await self._store(order_id, record, self._tally("placed", fallback=sent > 1))
                if self.placed is not None:
                    await self.placed(order_id, record, view, order)
                log.info("add", extra={"order": order_id, "service": view.id, "tried": tried})
                return OrderAnswer(order=order_id)
            if kind == "unknown":
                record.state = "unknown"
                await self._store(order_id, record, self._tally("unknown"))
                self._events.emit(unknown_alert(order_id, record, value))
                log.error("add: ambiguous outcome, never re-sent", extra={
                    "order": order_id, "service": view.id, "tried": tried, "error": value})
                raise ClientError(NOT_CONFIRMED)
            if kind == "refused":
                await self._fail(order_id, record, "refused upstream")
                log.info("add: refused", extra={"order": order_id, "tried": tried})
                raise ClientError(public_message(value, cand.provider))
            # "next" / "unreachable": a definite rejection worth trying elsewhere, or
            # never reached
        if record is not None:
            await self._fail(order_id, record, "every candidate refused or unavailable")
        log.warning("add: no candidate took it", extra={
            "order": order_id, "service": view.id, "tried": tried})
        raise ClientError(UNAVAILABLE)

    async def _begin(self, order_id: int, record: OrderRecord, first: bool,
                     reserved: float | None) -> None:
        """Record the order as `dispatching` before it is sent; raise if it must not be."""
        try:
            if not first:
                await self._orders.put_order(order_id, record)
            elif not await self._orders.create_order(order_id, record):
                # a retry took the id over from this request (its claim lapsed)
                await self._release(order_id, record, "the order id was taken over")
                log.error("add: order id taken over by a retry, not sent",
                          extra={"order": order_id})
                raise ClientError(UNAVAILABLE)
        except StoreUnavailable:  # nothing was sent: give the money back, if we can
            record.state = "failed"
            self._journal_or_log(order_id, record, "redis failed before sending")
            raise
        if reserved is not None and \
                self._clock.monotonic() - reserved > PENDING_GRACE_S / 2:
            # so late the reconciler may have released the reservation: do not send
            await self._fail(order_id, record, "recorded too late after the reservation")
            raise ClientError(UNAVAILABLE)

    async def _fail(self, order_id: int, record: OrderRecord, why: str) -> None:
        """A definite failure: the record says so and the reservation goes back (once)."""
        record.state = "failed"
        try:
            await self._orders.put_order(order_id, record, settles=True,
                                         tally=self._tally("failed"))
            await self._release(order_id, record, why)
        except StoreUnavailable:
            self._journal_or_log(order_id, record, why)

    async def _release(self, order_id: int, record: OrderRecord, why: str) -> None:
        if record.ledger:
            await self._ledger.credit(record.client, record.charge, "release", order_id,
                                      note=why, settle=True)

    def _tally(self, outcome: Literal["placed", "unknown", "failed"],
               fallback: bool = False) -> Tally:  # the dashboard's, written with the record
        return Tally(outcome, self._clock.time(), fallback)

    async def _store(self, order_id: int, record: OrderRecord, tally: Tally) -> None:
        """A sent order's outcome (and counters): in Redis, journaled too unless durable."""
        in_redis = False
        with contextlib.suppress(StoreUnavailable):
            if await self._orders.put_order(order_id, record, settles=True, tally=tally,
                                            durable=True):
                return
            in_redis = True
            log.warning("add: durability barrier not met in time: journaled too", extra={
                "order": order_id, "durability": self._orders.barrier.what})
        held = record.charge if record.ledger else None
        if not journaled(self._journal, JournalEntry(order_id, record, store=self._orders.store,
                                                     charge=held)):
            log.critical("add: outcome neither durable in redis nor in the journal", extra={
                "order": order_id, "record": str(record), "in_redis": in_redis})
            if not in_redis:  # (in Redis, not yet durable: still the truth to answer)
                raise ClientError(NOT_CONFIRMED)

    def _journal_or_log(self, order_id: int, record: OrderRecord, why: str) -> None:
        """A failed order's record and release, for when Redis is back."""
        release = record.charge if record.ledger else None
        if not journaled(self._journal, JournalEntry(order_id, record, release, why,
                                                     store=self._orders.store)):
            log.critical("add: failure neither in redis nor in the journal (the record "
                         "stays `dispatching`)", extra={"order": order_id})

    async def send(self, cand: Candidate, order: AddRequest,
                    probe: bool) -> tuple[Outcome, str]:
        """Send one add: ("placed", upstream id) | ("next", why: refused, try elsewhere)
        | ("unreachable", why) | ("refused", message) | ("unknown", why). Every outcome
        is counted by the breakers; "not enough funds" also refreshes the provider's
        known balance."""
        provider, service = cand.provider, cand.upstream.service
        try:
            upstream_id = await self._providers[provider].add(
                order.upstream_fields(service, cand.upstream.form is not None))
        except ProviderError as exc:
            whose = blame(exc)
            await self._count(provider, service, probe, whose)
            if is_funds(exc):
                self._background(self._balances.refresh(provider))
            if isinstance(exc, Rejected):
                return ("next", exc.message) if exc.elsewhere else ("refused", exc.message)
            if isinstance(exc, Unreachable):
                return "unreachable", exc.message
            return "unknown", f"{exc.message} {exc.raw}".strip()
        await self._count(provider, service, probe, None)
        return "placed", upstream_id

    async def _count(self, provider: str, service: str, probe: bool,
                     whose: str | None) -> None:
        """Tell the breakers how the provider did (None: it answered sanely). Health
        counting never costs an order its outcome: a Redis failure here is logged."""
        try:
            if whose is None:
                await self._breakers.success(provider, service, probe)
            else:
                await self._breakers.failure(provider, service if whose == "service" else None)
        except StoreUnavailable as exc:
            log.warning("add: breaker not told", extra={"provider": provider,
                                                        "error": exc.message})

    def _background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieved)
        return task


def new_record(client: ClientRecord, view: ServiceView, order: AddRequest, cand: Candidate,
               charge: Decimal, ledger: bool, now: float, currency: str,
               tried: list[Attempt]) -> OrderRecord:
    """An order's record as it is sent to `cand` (`tried`: the adds before, and any
    that follow: the same list)."""
    return OrderRecord(
        client=client.name, service=view.id, provider=cand.provider,
        upstream_service=cand.upstream.service, link=order.link,
        quantity=order.quantity, runs=order.runs, charge=charge,
        cost=money.charge(cand.cost_rate, order.quantity, order.runs),
        created=int(now), state="dispatching", currency=currency, ledger=ledger, tried=tried)


def journaled(journal: Journal, entry: JournalEntry) -> bool:
    """Append `entry` to the local journal; False when the disk refused it too."""
    try:
        journal.append(entry)
    except OSError:
        return False
    return True


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark the outcome seen: a dispatch whose requester left (its answer already
    logged by the dispatcher) is not reported again as "never retrieved"."""
    if not task.cancelled():
        task.exception()


def unknown_alert(order_id: int, record: OrderRecord, error: str) -> Alert:
    """An order whose upstream outcome is not known: never re-sent, money held."""
    error = error[:200]  # an upstream HTML page says nothing more past this
    return Alert(
        kind="order_unknown", subject=str(order_id), once=f"order_unknown:{order_id}",
        message=f"order {order_id}: {record.provider} may or may not have taken it ({error}); "
                f"resolve with `smm-gateway orders resolve {order_id} --placed UPSTREAM_ID` "
                f"or `--not-placed`",
        details={"order": order_id, "client": record.client, "service": record.service,
                 "provider": record.provider, "upstream_service": record.upstream_service,
                 "quantity": record.quantity, "runs": record.runs,
                 "charge": str(record.charge), "currency": record.currency, "error": error})
