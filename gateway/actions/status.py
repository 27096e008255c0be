"""`status`: an order's progress, asked upstream at most once per cache period, and
the refund of a ledger client's money when an order ends short.

Terminal statuses are never asked again. A Partial, Canceled or Refunded order
of a prepaid client is refunded once (the ledger's settlement mark), before its
new status is stored: a crash in between re-polls, and the mark keeps it once.

Every change an upstream answer shows (status, start count, remains) goes into the
order's history (`gateway.state.history`), and the events it is first to show
(seen, started, final) into its provider service's scorecard
(`gateway.state.scores`). Answers from the status cache show nothing new.

With order rescue on (`gateway.actions.rescue`) an order may move to another
provider while a poll is out: `guarded` reads the records again before storing, and
one that moved is answered as it stands, never stored or refunded from the old answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from typing import Any

from gateway import metrics, money
from gateway.actions.common import INCORRECT_ORDER, ids_of, own_orders
from gateway.actions.fanout import FanOut
from gateway.clock import SYSTEM, Clock
from gateway.config import GatewaySettings
from gateway.errors import ClientError, StoreUnavailable
from gateway.models import ItemError, OrderRecord, UpstreamStatus
from gateway.state import history
from gateway.state.clients import ClientRecord
from gateway.state.history import History
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders
from gateway.state.scores import Evidence, Scores
from gateway.wire import ErrorAnswer, StatusAnswer

log = logging.getLogger("gateway.actions")

Found = Mapping[str, tuple[int, OrderRecord]]
Seen = tuple[str | None, str | None, str | None]  # (status, start_count, remains)


def _remains(rec: OrderRecord) -> str:
    """What is left to deliver, as the client is told and as refunds count it: the
    provider's figure, else nothing for Completed and everything otherwise."""
    if rec.remains is not None:
        return rec.remains
    return "0" if rec.status == "Completed" else str(rec.quantity * (rec.runs or 1))


class Status:
    def __init__(self, settings: GatewaySettings, orders: Orders, ledger: Ledger,
                 fanout: FanOut, history: History, scores: Scores,
                 clock: Clock = SYSTEM) -> None:
        self._cache_s = settings.status_cache_s
        self._history = history
        self._scores = scores
        self._currency = settings.currency
        self._orders = orders
        self._ledger = ledger
        self._fanout = fanout
        self._clock = clock
        self.guarded = False  # orders may move between providers (the rescue): see _stale

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str],
                       ) -> StatusAnswer | dict[str, StatusAnswer | ErrorAnswer]:
        ids, multi = ids_of(fields, "order", "orders")
        # `dispatching`: an order answered while Redis was away is in the journal of
        # the replica that placed it for a moment; until replayed it is Pending
        found = await own_orders(self._orders, client.name, ids, ("placed", "dispatching"))
        await self._refresh(found)
        if not multi:
            if ids[0] not in found:
                raise ClientError(INCORRECT_ORDER)
            return self._answer(found[ids[0]][1])
        return {text: self._answer(found[text][1]) if text in found
                else ErrorAnswer(INCORRECT_ORDER) for text in ids}

    def _answer(self, rec: OrderRecord) -> StatusAnswer:
        status = rec.status or "Pending"
        remains = _remains(rec)
        charge = rec.charge - money.refund(rec.charge, status, remains,
                                           rec.quantity * (rec.runs or 1))
        return StatusAnswer(charge=money.wire(charge), start_count=rec.start_count or "0",
                            status=status, remains=remains, currency=self._currency)

    async def refresh(self, records: Mapping[int, OrderRecord]) -> None:
        """Ask upstream now, whatever the cache says (the rescue job, before it acts);
        the records are updated in place, refunded, stored and recorded as for a poll."""
        await self._refresh({str(oid): (oid, rec) for oid, rec in records.items()}, True)

    async def _refresh(self, found: Found, force: bool = False) -> None:
        """Ask upstream for the non-final orders not asked within the cache time."""
        now = int(self._clock.time())
        fresh_after = now if force else now - self._cache_s
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
        results = await self._fanout(groups, lambda p, ids: p.status(ids))
        changed: dict[int, OrderRecord] = {}
        moved: dict[int, Seen] = {}  # what those whose status moved said before
        for (provider, upstream_id), pairs in by_upstream.items():
            result = results.get((provider, upstream_id))
            if isinstance(result, ItemError):
                log.warning("status: upstream error for an order", extra={
                    "provider": provider, "error": result.message})
            if isinstance(result, UpstreamStatus):
                changed.update(self._apply(result, pairs, now, moved))
        if self.guarded and changed:
            await self._stale(changed, moved)
        refunds = [(oid, rec) for oid, rec in changed.items() if rec.ledger and rec.final]
        if refunds:
            await asyncio.gather(*(self._refund(oid, rec) for oid, rec in refunds))
        # the record and the history at once: a history written for a record that was
        # not is harmless (the next poll's same change is kept once, counted once)
        writes: list[Coroutine[Any, Any, object]] = \
            [self._orders.put_orders(changed)] if changed else []
        if moved:
            writes.append(self._record(changed, moved, now))
        await asyncio.gather(*writes)

    async def _stale(self, changed: dict[int, OrderRecord], moved: dict[int, Seen]) -> None:
        """Drop the records the rescue moved while this poll was out (read again now):
        what their old provider said is neither stored, refunded nor answered."""
        standing = await self._orders.get_orders(changed)
        for oid, rec in list(changed.items()):
            now = standing.get(oid)
            if now is None or (now.state, now.provider, now.upstream_id) != \
                    (rec.state, rec.provider, rec.upstream_id):
                del changed[oid]
                moved.pop(oid, None)
                if now is not None:  # the answer is the record as it stands
                    for field in rec.__struct_fields__:
                        setattr(rec, field, getattr(now, field))

    def _apply(self, result: UpstreamStatus, pairs: list[tuple[int, OrderRecord]],
               now: int, moved: dict[int, Seen]) -> dict[int, OrderRecord]:
        """The records to store after this answer (all of them when caching: the check
        time is what the cache reads); `moved` gets those whose status changed."""
        changed: dict[int, OrderRecord] = {}
        for oid, rec in pairs:
            before = (rec.status, rec.start_count, rec.remains)
            rec.status = result.status
            rec.start_count = result.start_count or rec.start_count
            if result.remains is not None:
                rec.remains = result.remains
            rec.checked = now
            if before != (rec.status, rec.start_count, rec.remains):
                moved[oid] = before
                changed[oid] = rec
            elif self._cache_s > 0:
                changed[oid] = rec
        return changed

    async def _record(self, records: Mapping[int, OrderRecord], moved: Mapping[int, Seen],
                      now: int) -> None:
        """History entries for the changes, then the scorecard events they were first
        to show. Evidence, not money: a Redis failure here costs the client nothing."""
        ids = list(moved)
        try:
            claimed = await self._history.append(
                [(oid, history.status_entry(records[oid], now,
                                            history.claims(moved[oid], records[oid])))
                 for oid in ids])
            evidence = Evidence()
            for oid, bits in zip(ids, claimed, strict=True):
                evidence.order(records[oid], bits, now)
            if evidence:
                for (provider, service), card in (await self._scores.add(evidence)).items():
                    metrics.scorecard(provider, service, card.completed_share,
                                      card.delivered_mean)
        except StoreUnavailable as exc:
            log.warning("status: history or scorecard not written",
                        extra={"error": exc.message})

    async def _refund(self, order_id: int, rec: OrderRecord) -> None:
        amount = money.refund(rec.charge, rec.status or "", _remains(rec),
                              rec.quantity * (rec.runs or 1))
        if amount > 0:
            await self._ledger.credit(rec.client, amount, "refund", order_id,
                                      note=rec.status or "", settle=True)
