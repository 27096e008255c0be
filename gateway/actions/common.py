"""What the actions share: the messages clients see, reading the ids a call names,
and finding a client's own orders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.errors import ClientError
from gateway.models import OrderRecord
from gateway.routing.params import as_id, split_ids
from gateway.state.orders import Orders

INCORRECT_ORDER = "Incorrect order ID"
REFILL_NOT_FOUND = "Refill not found"
UNAVAILABLE = "Service is temporarily unavailable, try again later"
NOT_CONFIRMED = "Order could not be confirmed; do not resend it, contact support"
NOT_READY = "Service list is not available yet, try again later"


def ids_of(fields: Mapping[str, str], one: str, many: str) -> tuple[list[str], bool]:
    """The ids a multi-capable action names, and whether it was the multi form."""
    if fields.get(many, "").strip():
        return split_ids(fields[many]), True
    raw = fields.get(one, "").strip()
    if not raw:
        raise ClientError(f"Missing required parameter: {one}")
    return [raw], False


def id_or_text(text: str) -> int | str:
    """An id echoed back as the client sent it: a number as a number."""
    return as_id(text) or text


async def own_orders(orders: Orders, client: str, ids: Iterable[str],
                     states: tuple[str, ...] = ("placed",),
                     ) -> dict[str, tuple[int, OrderRecord]]:
    """Sent id -> (order id, record) for the ids that are this client's orders in
    one of `states` (placed, unless told otherwise)."""
    numeric = {text: as_id(text) for text in ids}
    records = await orders.get_orders(i for i in numeric.values() if i is not None)
    out: dict[str, tuple[int, OrderRecord]] = {}
    for text, oid in numeric.items():
        rec = records.get(oid) if oid is not None else None
        if oid is not None and rec is not None and rec.client == client \
                and rec.state in states:
            out[text] = (oid, rec)
    return out
