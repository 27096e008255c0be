"""`refill` and `refill_status`: refills get gateway ids of their own, and route
back to the provider that holds the order.

Each refill the provider accepts or refuses, and each refill outcome (Completed,
Rejected, Error), goes into the order's history and its provider service's
scorecard; an outcome counts once however many replicas see it (the history
keeps it once)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping

from gateway.actions.common import (
    INCORRECT_ORDER,
    REFILL_NOT_FOUND,
    UNAVAILABLE,
    id_or_text,
    ids_of,
    own_orders,
)
from gateway.actions.fanout import FanOut
from gateway.clock import SYSTEM, Clock
from gateway.errors import ClientError, StoreUnavailable
from gateway.models import FINAL_REFILL_STATUSES, ItemError, OrderRecord, RefillRecord
from gateway.routing.params import as_id
from gateway.state import history as h
from gateway.state.clients import ClientRecord
from gateway.state.history import History
from gateway.state.orders import Orders
from gateway.state.scores import Evidence, Scores
from gateway.upstream.classify import public_message
from gateway.wire import (
    ErrorAnswer,
    RefillAnswer,
    RefillItem,
    RefillStatusAnswer,
    RefillStatusItem,
)

log = logging.getLogger("gateway.actions")

# scorecard field and history event of each thing a refill can do (gateway.state.scores)
_ASKED, _REFUSED = ("rq", h.REFILL_ASKED), ("rr", h.REFILL_REFUSED)
_OUTCOMES = {"Completed": ("ro", h.REFILL_DONE), "Rejected": ("rf", h.REFILL_FAILED),
             "Error": ("rf", h.REFILL_FAILED)}
# (order id, its record, (scorecard field, history code), gateway refill id or None)
Event = tuple[int, OrderRecord, tuple[str, int], int | None]


class Evidenced:
    """Refill events into the orders' histories and their scorecards: evidence, not
    money, so a Redis failure here is logged and the answer stands."""

    def __init__(self, history: History, scores: Scores, clock: Clock) -> None:
        self._history = history
        self._scores = scores
        self._clock = clock

    async def record(self, events: list[Event]) -> None:
        if not events:
            return
        now = self._clock.time()
        try:
            kept = await self._history.append(
                [(oid, h.event_entry(code, now, rid)) for oid, _, (_, code), rid in events])
            evidence = Evidence()
            for (_, rec, (name, _), _), bits in zip(events, kept, strict=True):
                if bits >= 0:
                    evidence.add(rec.provider, rec.upstream_service, **{name: 1.0})
            if evidence:
                await self._scores.add(evidence)
        except StoreUnavailable as exc:
            log.warning("refill: history or scorecard not written",
                        extra={"error": exc.message})


class Refill:
    def __init__(self, orders: Orders, fanout: FanOut, evidenced: Evidenced,
                 clock: Clock = SYSTEM) -> None:
        self._orders = orders
        self._fanout = fanout
        self._evidenced = evidenced
        self._clock = clock

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str],
                       ) -> RefillAnswer | list[RefillItem]:
        ids, multi = ids_of(fields, "order", "orders")
        found = await own_orders(self._orders, client.name, ids)
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if rec.upstream_id not in groups[rec.provider]:
                groups[rec.provider].append(rec.upstream_id or "")
        results = await self._fanout(groups, lambda p, u: p.refill(u))
        # refill ids in request order: the first order sent gets the lowest id
        upstream: dict[int, str] = {}
        for text in ids:
            if text in found:
                oid, rec = found[text]
                result = results.get((rec.provider, rec.upstream_id or ""))
                if isinstance(result, str):
                    upstream.setdefault(oid, result)
        rid_of = dict(zip(upstream, await self._orders.new_refill_ids(len(upstream)),
                          strict=True))
        records: dict[int, RefillRecord] = {}
        answers: dict[str, int | ErrorAnswer] = {}
        events: dict[int, Event] = {}
        for text in ids:
            if text not in found:
                answers[text] = ErrorAnswer(INCORRECT_ORDER)
                continue
            oid, rec = found[text]
            result = results.get((rec.provider, rec.upstream_id or ""))
            if isinstance(result, ItemError):
                answers[text] = ErrorAnswer(public_message(result.message, rec.provider))
                events.setdefault(oid, (oid, rec, _REFUSED, None))
            elif oid in rid_of:
                rid = rid_of[oid]
                records[rid] = RefillRecord(client=client.name, order=oid,
                                            provider=rec.provider, upstream_id=upstream[oid],
                                            created=int(self._clock.time()))
                answers[text] = rid
                events.setdefault(oid, (oid, rec, _ASKED, rid))
            else:
                answers[text] = ErrorAnswer(UNAVAILABLE)
        await self._orders.put_refills(records)
        await self._evidenced.record(list(events.values()))
        if not multi:
            answer = answers[ids[0]]
            if isinstance(answer, ErrorAnswer):
                raise ClientError(answer.error)
            return RefillAnswer(refill=answer)
        return [RefillItem(order=id_or_text(t), refill=answers[t]) for t in ids]


class RefillStatus:
    def __init__(self, orders: Orders, fanout: FanOut, evidenced: Evidenced) -> None:
        self._orders = orders
        self._fanout = fanout
        self._evidenced = evidenced

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str],
                       ) -> RefillStatusAnswer | list[RefillStatusItem]:
        ids, multi = ids_of(fields, "refill", "refills")
        numeric = {t: as_id(t) for t in ids}
        records = await self._orders.get_refills(i for i in numeric.values() if i is not None)
        found = {t: (rid, records[rid]) for t, rid in numeric.items()
                 if rid is not None and rid in records and records[rid].client == client.name}
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if rec.status not in FINAL_REFILL_STATUSES:
                groups[rec.provider].append(rec.upstream_id)
        results = await self._fanout(groups, lambda p, u: p.refill_status(u))
        changed: dict[int, RefillRecord] = {}
        answers: dict[str, str | ErrorAnswer] = {}
        for text in ids:
            if text not in found:
                answers[text] = ErrorAnswer(REFILL_NOT_FOUND)
                continue
            rid, rec = found[text]
            result = results.get((rec.provider, rec.upstream_id))
            if isinstance(result, str) and result != rec.status:
                rec.status = result
                changed[rid] = rec
            answers[text] = rec.status or "Pending"
        await self._orders.put_refills(changed)
        await self._outcomes(changed)
        if not multi:
            if ids[0] not in found:
                raise ClientError(REFILL_NOT_FOUND)
            return RefillStatusAnswer(status=found[ids[0]][1].status or "Pending")
        return [RefillStatusItem(refill=id_or_text(t), status=answers[t]) for t in ids]

    async def _outcomes(self, changed: Mapping[int, RefillRecord]) -> None:
        """Refills that just ended: their orders' histories and scorecards."""
        ended = {rid: r for rid, r in changed.items() if r.status in _OUTCOMES}
        if not ended:
            return
        try:
            orders = await self._orders.get_orders({r.order for r in ended.values()})
        except StoreUnavailable:
            return
        await self._evidenced.record(
            [(r.order, orders[r.order], _OUTCOMES[r.status or ""], rid)
             for rid, r in ended.items() if r.order in orders])
