"""Placing one order: the dispatch loop over candidates and the order's states.

    dispatching --(provider took it)--------------> placed
         |------(may have reached it: timeout)----> unknown  (never re-sent)
         |------(definite refusal, or none left)--> failed   (reservation released)

The record is written before the upstream `add` is sent, so an order that may
exist upstream always has a record. Only a definite rejection worth trying
elsewhere, or a request that provably never left, moves on to the next
candidate; anything ambiguous stops the loop and answers NOT_CONFIRMED.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from decimal import Decimal
from typing import Any, Literal

from gateway import money
from gateway.actions.common import NOT_CONFIRMED, UNAVAILABLE
from gateway.clock import SYSTEM, Clock
from gateway.errors import ClientError, ProviderError, Rejected, Unreachable
from gateway.models import OrderRecord
from gateway.routing import decide
from gateway.routing.balances import Balances
from gateway.routing.params import AddRequest
from gateway.routing.plan import Candidate, usable
from gateway.routing.views import ServiceView
from gateway.state.breakers import Breakers
from gateway.state.clients import ClientRecord
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders
from gateway.upstream.classify import blame, is_funds, public_message
from gateway.upstream.client import ProviderClient
from gateway.wire import OrderAnswer

log = logging.getLogger("gateway.actions")

Outcome = Literal["placed", "next", "refused", "unknown"]


class Dispatcher:
    def __init__(self, orders: Orders, ledger: Ledger, breakers: Breakers,
                 balances: Balances, providers: Mapping[str, ProviderClient],
                 currency: str, clock: Clock = SYSTEM) -> None:
        self._orders = orders
        self._ledger = ledger
        self._breakers = breakers
        self._balances = balances
        self._providers = providers
        self._currency = currency
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        """Wait for the background work this dispatcher started (balance refreshes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def place(self, client: ClientRecord, view: ServiceView,
                    order: AddRequest) -> OrderAnswer:
        picked = decide.choices(view, order.quantity, order.runs, self._balances)
        if not usable(picked):
            log.warning("add: no candidate", extra={
                "service": view.id, "reasons": [c.reason for c in picked]})
            raise ClientError(UNAVAILABLE)
        charge = money.charge(client.rate(view.id, view.rate), order.quantity, order.runs)
        ledger = client.mode == "ledger"
        order_id = await self._orders.next_order_id()
        if ledger and not await self._ledger.reserve(client.name, charge, order_id):
            raise ClientError("Not enough funds on balance")
        tried: list[dict[str, str]] = []
        record: OrderRecord | None = None
        async for verdict in decide.verdicts(picked, self._breakers, take=True):
            cand = verdict.candidate
            if verdict.reason is not None:
                tried.append({"provider": cand.provider, "outcome": verdict.reason})
                continue
            record = self._record(client, view, order, cand, charge, ledger)
            await self._orders.put_order(order_id, record)
            kind, value = await self._send(cand, order, verdict.probe)
            tried.append({"provider": cand.provider, "outcome": kind,
                          "probe": str(verdict.probe)})
            if kind == "placed":
                record.state, record.upstream_id = "placed", value
                await self._orders.put_order(order_id, record)
                log.info("add", extra={"order": order_id, "service": view.id, "tried": tried})
                return OrderAnswer(order=order_id)
            if kind == "unknown":
                record.state = "unknown"
                await self._orders.put_order(order_id, record)
                log.error("add: ambiguous outcome, never re-sent", extra={
                    "order": order_id, "service": view.id, "tried": tried, "error": value})
                raise ClientError(NOT_CONFIRMED)
            if kind == "refused":
                await self._fail(order_id, record, "refused upstream", client.name, charge)
                log.info("add: refused", extra={"order": order_id, "tried": tried})
                raise ClientError(public_message(value, cand.provider))
            # "next": a definite rejection worth trying elsewhere, or never reached
        await self._fail(order_id, record, "every candidate refused or unavailable",
                         client.name, charge if ledger else None)
        log.warning("add: no candidate took it", extra={
            "order": order_id, "service": view.id, "tried": tried})
        raise ClientError(UNAVAILABLE)

    def _record(self, client: ClientRecord, view: ServiceView, order: AddRequest,
                cand: Candidate, charge: Decimal, ledger: bool) -> OrderRecord:
        return OrderRecord(
            client=client.name, service=view.id, provider=cand.provider,
            upstream_service=cand.upstream.service, link=order.link,
            quantity=order.quantity, runs=order.runs, charge=charge,
            cost=money.charge(cand.cost_rate, order.quantity, order.runs),
            created=int(self._clock.time()), state="dispatching", currency=self._currency,
            ledger=ledger)

    async def _fail(self, order_id: int, record: OrderRecord | None, why: str,
                    client: str, charge: Decimal | None) -> None:
        """A definite failure: give the reservation back (once), keep the record."""
        if charge is not None and (record is None or record.ledger):
            await self._ledger.credit(client, charge, "release", order_id, note=why,
                                      settle=True)
        if record is not None:
            record.state = "failed"
            await self._orders.put_order(order_id, record)

    async def _send(self, cand: Candidate, order: AddRequest,
                    probe: bool) -> tuple[Outcome, str]:
        """Send one add: ("placed", upstream id) | ("next", why) | ("refused", message)
        | ("unknown", why). Every outcome is counted by the breakers; "not enough
        funds" also refreshes the provider's known balance."""
        provider, service = cand.provider, cand.upstream.service
        try:
            upstream_id = await self._providers[provider].add(
                order.upstream_fields(service, cand.upstream.form is not None))
        except ProviderError as exc:
            whose = blame(exc)
            if whose is None:  # the order's own fault: the provider answered sanely
                await self._breakers.success(provider, service, probe)
            else:
                await self._breakers.failure(provider, service if whose == "service" else None)
            if is_funds(exc):
                self._background(self._balances.refresh(provider))
            if isinstance(exc, Rejected):
                return ("next", exc.message) if exc.elsewhere else ("refused", exc.message)
            if isinstance(exc, Unreachable):
                return "next", exc.message
            return "unknown", f"{exc.message} {exc.raw}".strip()
        await self._breakers.success(provider, service, probe)
        return "placed", upstream_id

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
