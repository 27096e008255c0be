"""What each action does: `services`, `add`, `status`, `refill`, `refill_status`,
`cancel`, `balance`. One method per action on `Gateway`; each takes the
authenticated client and the request fields and returns the answer to encode.

Upstream texts that reach a client go through `public_message`, which strips
anything that could name a provider.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from gateway import money
from gateway.catalog import Catalog, ServiceView, etag
from gateway.clients import ClientRecord
from gateway.config import Settings
from gateway.dialect import ItemError
from gateway.errors import ClientError, ProviderError, Rejected, Unreachable
from gateway.health import Balances, Breakers, classify, is_funds
from gateway.ledger import Ledger
from gateway.limits import IDEMPOTENCY_TTL_S, Answer, Claims
from gateway.models import FINAL_REFILL_STATUSES, OrderRecord, RefillRecord
from gateway.params import AddRequest, as_id, parse_add, parse_service_id, split_ids
from gateway.provider import MULTI_LIMIT, ProviderClient
from gateway.router import Needs, family, plan, usable
from gateway.store import Store

log = logging.getLogger("gateway.actions")

INCORRECT_ORDER = "Incorrect order ID"
REFILL_NOT_FOUND = "Refill not found"
UNAVAILABLE = "Service is temporarily unavailable, try again later"
NOT_CONFIRMED = "Order could not be confirmed; do not resend it, contact support"

_URL = re.compile(r"(https?://|www\.)\S+|\b[\w-]+(\.[\w-]+)*\.[a-z]{2,}\b", re.IGNORECASE)

T = TypeVar("T")
R = TypeVar("R")


def public_message(message: str, provider: str) -> str:
    """An upstream's message made safe to show: no URL, domain or provider name."""
    text = _URL.sub("", message)
    text = re.sub(re.escape(provider), "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+", " ", text).strip(" .,:;-")
    return text[:200] or "Incorrect request"


def _error(message: str) -> dict[str, str]:
    return {"error": message}


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Gateway:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog,
                 providers: Mapping[str, ProviderClient], breakers: Breakers,
                 balances: Balances) -> None:
        self.settings = settings
        self.store = store
        self.ledger = Ledger(store.redis)
        self.claims = Claims(store.redis)
        self.breakers = breakers
        self.balances = balances
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client_bodies: dict[str, tuple[Any, tuple[bytes, str]]] = {}
        self.catalog = catalog
        self.providers = providers
        self.currency = settings.gateway.currency
        self._converter = money.Converter(settings.gateway)
        self._balance: tuple[float, dict[str, Any]] | None = None
        self._balance_lock = asyncio.Lock()

    # --- helpers -------------------------------------------------------------

    async def _per_provider(
        self, groups: Mapping[str, Sequence[T]],
        call: Callable[[ProviderClient, Sequence[T]], Awaitable[dict[T, R]]],
    ) -> dict[tuple[str, T], R | ProviderError]:
        """Run `call` per provider (chunks of MULTI_LIMIT), all concurrently.

        Answers are keyed by (provider, upstream id): two providers may well hand
        out the same id. A provider that fails as a whole yields its ProviderError
        for each of its ids.
        """
        async def one(name: str, ids: Sequence[T]) -> dict[tuple[str, T], R | ProviderError]:
            try:
                answer = await call(self.providers[name], ids)
            except ProviderError as exc:
                log.warning("provider call failed", extra={
                    "provider": name, "error": exc.message, "raw": exc.raw})
                await self.breakers.failure(name, None)
                return {(name, i): exc for i in ids}
            await self.breakers.success(name)
            return {(name, i): r for i, r in answer.items()}

        tasks = [one(name, chunk) for name, ids in groups.items()
                 for chunk in _chunks(ids, MULTI_LIMIT)]
        merged: dict[tuple[str, T], R | ProviderError] = {}
        for part in await asyncio.gather(*tasks):
            merged.update(part)
        return merged

    def _multi(self, fields: Mapping[str, str], one: str, many: str) -> tuple[list[str], bool]:
        """The ids a multi-capable action names, and whether it was the multi form."""
        if fields.get(many, "").strip():
            return split_ids(fields[many]), True
        raw = fields.get(one, "").strip()
        if not raw:
            raise ClientError(f"Missing required parameter: {one}")
        return [raw], False

    async def _own_orders(self, client: str,
                          ids: Iterable[str]) -> dict[str, tuple[int, OrderRecord]]:
        """Sent id -> (order id, record) for the ids that are this client's placed orders."""
        numeric = {text: as_id(text) for text in ids}
        records = await self.store.get_orders(i for i in numeric.values() if i is not None)
        out: dict[str, tuple[int, OrderRecord]] = {}
        for text, oid in numeric.items():
            rec = records.get(oid) if oid is not None else None
            if rec is not None and rec.client == client and rec.state == "placed":
                out[text] = (oid, rec)  # type: ignore[assignment]
        return out

    # --- services ------------------------------------------------------------

    def services(self, client: ClientRecord) -> tuple[bytes, str]:
        """The `services` answer, pre-encoded, and its ETag; per client only if it has
        its own prices or services."""
        if client.plain:
            return self.catalog.body, self.catalog.etag
        signature = (self.catalog.version, client.markup,
                     tuple(sorted(client.prices.items())), tuple(client.services or ()))
        cached = self._client_bodies.get(client.name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        body = msgspec.json.encode([
            {**view.answer(), "rate": money.wire(client.rate(view.id, view.rate))}
            for view in self.catalog.views.values() if client.allows(view.id)])
        self._client_bodies[client.name] = (signature, (body, etag(body)))
        return body, etag(body)

    # --- add -----------------------------------------------------------------

    def _view(self, client: ClientRecord, fields: Mapping[str, str]) -> ServiceView:
        service_id = parse_service_id(fields)
        view = self.catalog.views.get(service_id)
        if view is None or not client.allows(service_id):
            raise ClientError("Incorrect service ID")
        return view

    async def add(self, client: ClientRecord, fields: Mapping[str, str]) -> dict[str, Any]:
        """Place an order, at most once per Idempotency-Key or duplicate window."""
        view = self._view(client, fields)
        order = parse_add(fields, family(view.type), view.form)
        idem = fields.get("idempotency_key", "").strip()
        if idem:
            token, ttl = "idem:" + idem[:200], float(IDEMPOTENCY_TTL_S)
        elif client.dup_window_s > 0:
            token, ttl = "dup:" + order.fingerprint(), client.dup_window_s
        else:
            return await self._add(client, view, order)
        fingerprint = order.fingerprint()
        first = await self.claims.claim(client.name, token, fingerprint, ttl)
        if first is not None:
            if first.status != 200:
                raise ClientError.with_status(first.body.decode(), first.status)
            return dict(msgspec.json.decode(first.body))
        try:
            answer = await self._add(client, view, order)
        except ClientError as exc:
            if idem:  # the same request gets the same answer, errors included
                await self.claims.finish(client.name, token, Answer(
                    fingerprint, True, exc.status_code, exc.message.encode()), ttl)
            else:
                await self.claims.release(client.name, token)
            raise
        except BaseException:
            await self.claims.release(client.name, token)
            raise
        await self.claims.finish(client.name, token, Answer(
            fingerprint, True, 200, msgspec.json.encode(answer)), ttl)
        return answer

    async def _add(self, client: ClientRecord, view: ServiceView,
                   order: AddRequest) -> dict[str, Any]:
        if order.quantity < view.min:
            raise ClientError(f"Quantity less than minimal {view.min}")
        if order.quantity > view.max:
            raise ClientError(f"Quantity more than maximal {view.max}")
        if order.runs and not view.dripfeed:
            raise ClientError("Drip-feed is not available for this service")
        total = order.total
        choices = plan(view.candidates, Needs(
            quantity=order.quantity, runs=order.runs, family=family(view.type),
            features=view.features, max_rate=view.max_cost,
            dripfeed_trusted=view.settings.dripfeed is True),
            blocked=self._short_of_funds(view, total))
        candidates = usable(choices)
        if not candidates:
            log.warning("add: no candidate", extra={
                "service": view.id, "reasons": [c.reason for c in choices]})
            raise ClientError(UNAVAILABLE)

        charge = money.charge(client.rate(view.id, view.rate), order.quantity, order.runs)
        ledger = client.mode == "ledger"
        order_id = await self.store.next_order_id()
        if ledger and not await self.ledger.reserve(client.name, charge, order_id):
            raise ClientError("Not enough funds on balance")
        tried: list[dict[str, str]] = []
        record: OrderRecord | None = None
        for cand in candidates:
            gate = await self.breakers.allow(cand.provider, cand.upstream.service)
            if not gate.allowed:
                tried.append({"provider": cand.provider, "outcome": gate.reason or "skipped"})
                continue
            record = OrderRecord(
                client=client.name, service=view.id, provider=cand.provider,
                upstream_service=cand.upstream.service, link=order.link,
                quantity=order.quantity, runs=order.runs, charge=charge,
                cost=money.charge(cand.cost_rate, order.quantity, order.runs),
                created=int(time.time()), state="dispatching", currency=self.currency,
                ledger=ledger)
            await self.store.put_order(order_id, record)
            kind, value = await self._dispatch(cand.provider, cand.upstream.service, order,
                                               cand.upstream.form is not None, gate.probe)
            tried.append({"provider": cand.provider, "outcome": kind, "probe": str(gate.probe)})
            if kind == "placed":
                record.state, record.upstream_id = "placed", value
                await self.store.put_order(order_id, record)
                log.info("add", extra={"order": order_id, "service": view.id, "tried": tried})
                return {"order": order_id}
            if kind == "unknown":
                record.state = "unknown"
                await self.store.put_order(order_id, record)
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

    def _short_of_funds(self, view: ServiceView, total: int) -> dict[tuple[str, str], str]:
        """Candidates whose provider's last known balance cannot pay for this order."""
        out: dict[tuple[str, str], str] = {}
        for cand in view.candidates:
            known = self.balances.in_gateway_currency(cand.provider)
            cost = cand.cost_rate * total / money.THOUSAND
            if known is not None and known < cost:
                out[(cand.provider, cand.upstream.service)] = "balance too low"
        return out

    async def _fail(self, order_id: int, record: OrderRecord | None, why: str,
                    client: str, charge: Decimal | None) -> None:
        """A definite failure: give the reservation back (once), keep the record."""
        if charge is not None and (record is None or record.ledger):
            await self.ledger.credit(client, charge, "release", order_id, note=why, settle=True)
        if record is not None:
            record.state = "failed"
            await self.store.put_order(order_id, record)

    async def _dispatch(self, provider: str, upstream_service: str, order: AddRequest,
                        wants_form: bool, probe: bool) -> tuple[str, str]:
        """Send one add; ("placed", id) | ("next", why) | ("refused", msg) | ("unknown", why).

        Every outcome is counted by the breakers; "not enough funds" also refreshes
        the provider's known balance.
        """
        try:
            upstream_id = await self.providers[provider].add(
                order.upstream_fields(upstream_service, wants_form))
        except ProviderError as exc:
            blame = classify(exc)
            if blame is None:  # the order's own fault: the provider answered sanely
                await self.breakers.success(provider, upstream_service, probe)
            else:
                await self.breakers.failure(provider, upstream_service, blame)
            if is_funds(exc):
                self._background(self.balances.refresh(provider))
            if isinstance(exc, Rejected):
                return ("next", exc.message) if exc.elsewhere else ("refused", exc.message)
            if isinstance(exc, Unreachable):
                return "next", exc.message
            return "unknown", f"{exc.message} {exc.raw}".strip()
        await self.breakers.success(provider, upstream_service, probe)
        return "placed", upstream_id

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- status --------------------------------------------------------------

    def _status_answer(self, rec: OrderRecord) -> dict[str, str]:
        status = rec.status or "Pending"
        total = rec.quantity * (rec.runs or 1)
        remains = rec.remains if rec.remains is not None else (
            "0" if status == "Completed" else str(total))
        charge = rec.charge - money.refund(rec.charge, status, remains, total)
        return {
            "charge": money.wire(charge),
            "start_count": rec.start_count or "0",
            "status": status,
            "remains": remains,
            "currency": self.currency,
        }

    async def _refresh_statuses(self, found: Mapping[str, tuple[int, OrderRecord]]) -> None:
        """Ask upstream for the non-final orders in `found` not asked within the cache time."""
        now = int(time.time())
        fresh_after = now - self.settings.gateway.status_cache_s
        groups: dict[str, list[str]] = defaultdict(list)
        by_upstream: dict[tuple[str, str], list[tuple[int, OrderRecord]]] = defaultdict(list)
        for oid, rec in found.values():
            if rec.final or rec.upstream_id is None or rec.checked > fresh_after:
                continue
            key = (rec.provider, rec.upstream_id)
            if key not in by_upstream:
                groups[rec.provider].append(rec.upstream_id)
            by_upstream[key].append((oid, rec))
        if not groups:
            return
        results = await self._per_provider(groups, lambda p, ids: p.status(ids))
        changed: dict[int, OrderRecord] = {}
        for (provider, upstream_id), pairs in by_upstream.items():
            result = results.get((provider, upstream_id))
            if result is None or isinstance(result, (ItemError, ProviderError)):
                if isinstance(result, ItemError):
                    log.warning("status: upstream error for an order", extra={
                        "provider": provider, "error": str(result)})
                continue
            caching = self.settings.gateway.status_cache_s > 0
            for oid, rec in pairs:
                before = (rec.status, rec.start_count, rec.remains)
                rec.status = result.status
                rec.start_count = result.start_count or rec.start_count
                if result.remains is not None:
                    rec.remains = result.remains
                rec.checked = now
                if caching or before != (rec.status, rec.start_count, rec.remains):
                    changed[oid] = rec
        refunds = [(oid, rec) for oid, rec in changed.items() if rec.ledger and rec.final]
        if refunds:
            # before the record is stored: a crash in between re-polls, and the
            # settlement mark keeps the refund to once
            await asyncio.gather(*(self._refund(oid, rec) for oid, rec in refunds))
        if changed:
            await self.store.put_orders(changed)

    async def _refund(self, order_id: int, rec: OrderRecord) -> None:
        amount = money.refund(rec.charge, rec.status or "", rec.remains,
                              rec.quantity * (rec.runs or 1))
        if amount > 0:
            await self.ledger.credit(rec.client, amount, "refund", order_id,
                                     note=rec.status or "", settle=True)

    async def status(self, client: str, fields: Mapping[str, str]) -> dict[str, Any]:
        ids, multi = self._multi(fields, "order", "orders")
        found = await self._own_orders(client, ids)
        await self._refresh_statuses(found)
        if not multi:
            if ids[0] not in found:
                raise ClientError(INCORRECT_ORDER)
            return self._status_answer(found[ids[0]][1])
        return {text: self._status_answer(found[text][1]) if text in found
                else _error(INCORRECT_ORDER) for text in ids}

    # --- refill --------------------------------------------------------------

    async def refill(self, client: str, fields: Mapping[str, str]) -> Any:
        ids, multi = self._multi(fields, "order", "orders")
        found = await self._own_orders(client, ids)
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if rec.upstream_id not in groups[rec.provider]:
                groups[rec.provider].append(rec.upstream_id or "")
        results = await self._per_provider(groups, lambda p, u: p.refill(u))
        placed = [r for r in results.values()
                  if isinstance(r, str) and not isinstance(r, ItemError)]
        new_ids = await self.store.new_refill_ids(len(placed))
        records: dict[int, RefillRecord] = {}
        answers: dict[str, Any] = {}
        for text in ids:
            if text not in found:
                answers[text] = _error(INCORRECT_ORDER)
                continue
            oid, rec = found[text]
            result = results.get((rec.provider, rec.upstream_id or ""))
            if isinstance(result, ItemError):
                answers[text] = _error(public_message(result, rec.provider))
            elif isinstance(result, str) and new_ids:
                rid = new_ids.pop()
                records[rid] = RefillRecord(client=client, order=oid, provider=rec.provider,
                                            upstream_id=result, created=int(time.time()))
                answers[text] = rid
            else:
                answers[text] = _error(UNAVAILABLE)
        await self.store.put_refills(records)
        if not multi:
            answer = answers[ids[0]]
            if isinstance(answer, dict):
                raise ClientError(answer["error"])
            return {"refill": answer}
        return [{"order": as_id(t) or t, "refill": answers[t]} for t in ids]

    async def refill_status(self, client: str, fields: Mapping[str, str]) -> Any:
        ids, multi = self._multi(fields, "refill", "refills")
        numeric = {t: as_id(t) for t in ids}
        records = await self.store.get_refills(i for i in numeric.values() if i is not None)
        found = {t: (rid, records[rid]) for t, rid in numeric.items()
                 if rid is not None and rid in records and records[rid].client == client}
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if rec.status not in FINAL_REFILL_STATUSES:
                groups[rec.provider].append(rec.upstream_id)
        results = await self._per_provider(groups, lambda p, u: p.refill_status(u))
        changed: dict[int, RefillRecord] = {}
        answers: dict[str, Any] = {}
        for text in ids:
            if text not in found:
                answers[text] = _error(REFILL_NOT_FOUND)
                continue
            rid, rec = found[text]
            result = results.get((rec.provider, rec.upstream_id))
            if isinstance(result, str) and not isinstance(result, ItemError):
                if result != rec.status:
                    rec.status = result
                    changed[rid] = rec
            answers[text] = rec.status or "Pending"
        await self.store.put_refills(changed)
        if not multi:
            if ids[0] not in found:
                raise ClientError(REFILL_NOT_FOUND)
            return {"status": answers[ids[0]]}
        return [{"refill": as_id(t) or t,
                 "status": answers[t]} for t in ids]

    # --- cancel --------------------------------------------------------------

    async def cancel(self, client: str, fields: Mapping[str, str]) -> list[dict[str, Any]]:
        ids, _ = self._multi(fields, "order", "orders")
        found = await self._own_orders(client, ids)
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if not rec.final:
                groups[rec.provider].append(rec.upstream_id or "")
        results = await self._per_provider(groups, lambda p, u: p.cancel(u))
        out: list[dict[str, Any]] = []
        for text in ids:
            order_id: int | str = as_id(text) or text
            if text not in found:
                out.append({"order": order_id, "cancel": _error(INCORRECT_ORDER)})
                continue
            _, rec = found[text]
            result = results.get((rec.provider, rec.upstream_id or ""))
            if result is True:
                out.append({"order": order_id, "cancel": 1})
            elif isinstance(result, ItemError):
                out.append({"order": order_id,
                            "cancel": _error(public_message(result, rec.provider))})
            elif isinstance(result, ProviderError):
                out.append({"order": order_id, "cancel": _error(UNAVAILABLE)})
            else:
                out.append({"order": order_id,
                            "cancel": _error("Order cannot be canceled")})
        return out

    # --- balance -------------------------------------------------------------

    async def balance(self, client: ClientRecord) -> dict[str, str]:
        if client.mode == "ledger":
            amount = await self.ledger.balance(client.name)
            return {"balance": money.wire(amount), "currency": self.currency}
        return await self._upstream_balance()

    async def _upstream_balance(self) -> dict[str, str]:
        cached = self._balance
        if cached and time.monotonic() - cached[0] < self.settings.gateway.balance_cache_s:
            return cached[1]
        async with self._balance_lock:
            cached = self._balance
            if cached and time.monotonic() - cached[0] < self.settings.gateway.balance_cache_s:
                return cached[1]
            total = Decimal(0)

            async def one(name: str) -> Decimal | None:
                await self.balances.refresh(name)
                return self.balances.in_gateway_currency(name)

            for value in await asyncio.gather(
                    *(one(n) for n in self.providers)):
                if value is not None:
                    total += value
            answer = {"balance": money.wire(total), "currency": self.currency}
            self._balance = (time.monotonic(), answer)
            return answer
