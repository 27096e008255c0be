"""`cancel`: always answered as a list, one item per id sent, routed to the
provider that holds each order. Each cancel a provider accepts or refuses goes into
the order's history and its provider service's scorecard."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from gateway.actions.common import INCORRECT_ORDER, UNAVAILABLE, id_or_text, ids_of, own_orders
from gateway.actions.fanout import FanOut
from gateway.actions.refills import Event, Evidenced
from gateway.errors import ProviderError
from gateway.models import ItemError
from gateway.state import history as h
from gateway.state.clients import ClientRecord
from gateway.state.orders import Orders
from gateway.upstream.classify import public_message
from gateway.wire import CancelItem, ErrorAnswer

CANNOT_CANCEL = "Order cannot be canceled"


class Cancel:
    def __init__(self, orders: Orders, fanout: FanOut, evidenced: Evidenced) -> None:
        self._orders = orders
        self._fanout = fanout
        self._evidenced = evidenced

    async def __call__(self, client: ClientRecord,
                       fields: Mapping[str, str]) -> list[CancelItem]:
        ids, _ = ids_of(fields, "order", "orders")
        found = await own_orders(self._orders, client.name, ids)
        groups: dict[str, list[str]] = defaultdict(list)
        for _, rec in found.values():
            if not rec.final:
                groups[rec.provider].append(rec.upstream_id or "")
        results = await self._fanout(groups, lambda p, u: p.cancel(u))
        out: list[CancelItem] = []
        events: dict[int, Event] = {}
        for text in ids:
            answer: int | ErrorAnswer
            if text not in found:
                answer = ErrorAnswer(INCORRECT_ORDER)
            else:
                oid, rec = found[text]
                result = results.get((rec.provider, rec.upstream_id or ""))
                if result is True:
                    answer = 1
                    events.setdefault(oid, (oid, rec, ("cq", h.CANCEL_ASKED), None))
                elif isinstance(result, ItemError):
                    answer = ErrorAnswer(public_message(result.message, rec.provider))
                    events.setdefault(oid, (oid, rec, ("cr", h.CANCEL_REFUSED), None))
                elif isinstance(result, ProviderError):
                    answer = ErrorAnswer(UNAVAILABLE)
                else:
                    answer = ErrorAnswer(CANNOT_CANCEL)
                    if result is False:
                        events.setdefault(oid, (oid, rec, ("cr", h.CANCEL_REFUSED), None))
            out.append(CancelItem(order=id_or_text(text), cancel=answer))
        await self._evidenced.record(list(events.values()))
        return out
