"""The internal typed models: what the dialect reader produces and the state keeps.

What a client receives is in `gateway.wire`.

Money is Decimal everywhere (msgspec encodes it as a string). Records stored in
Redis are array-like msgpack structs: compact, and cheap to decode.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

ORDER_STATUSES = ("Pending", "In progress", "Processing", "Completed", "Partial",
                  "Canceled", "Refunded")
FINAL_STATUSES = frozenset({"Completed", "Partial", "Canceled", "Refunded"})
REFILL_STATUSES = ("Pending", "In progress", "Completed", "Rejected", "Error")
FINAL_REFILL_STATUSES = frozenset({"Completed", "Rejected", "Error"})

# dispatching: written before the upstream add is sent; placed: the provider
# confirmed it; unknown: the outcome is ambiguous (never re-sent); failed: every
# candidate definitely refused (kept for the audit trail).
OrderState = Literal["dispatching", "placed", "unknown", "failed"]


class UpstreamService(msgspec.Struct, array_like=True, omit_defaults=True):
    """One service in a provider's list, normalised."""

    service: str
    name: str
    type: str
    category: str
    rate: Decimal
    min: int
    max: int
    refill: bool | None = None
    cancel: bool | None = None
    dripfeed: bool | None = None
    desc: str | None = None
    form: Any = None


class Missing(msgspec.Struct, array_like=True):
    """A service a provider stopped listing, remembered for the grace period."""

    service: UpstreamService
    since: float


class CatalogEntry(msgspec.Struct, array_like=True):
    """A provider's list as cached in Redis, with what it recently stopped listing."""

    fetched_at: float
    services: list[UpstreamService]
    missing: list[Missing] = []


class ItemError(msgspec.Struct, frozen=True):
    """A per-id error inside an upstream multi answer (the id failed, not the call)."""

    message: str


class UpstreamStatus(msgspec.Struct):
    status: str  # one of ORDER_STATUSES
    charge: Decimal | None = None
    start_count: str | None = None
    remains: str | None = None
    currency: str | None = None


class Attempt(msgspec.Struct, array_like=True, omit_defaults=True):
    """One upstream add of an order that did not place it: refused (and tried
    elsewhere), unreachable, refused for good, or unknown; with the message (cut to
    ATTEMPT_MESSAGE characters)."""

    provider: str
    service: str
    outcome: str  # refused | unreachable | unknown
    message: str = ""


ATTEMPT_MESSAGE = 80


class OrderRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    """One gateway order as stored in Redis."""

    client: str
    service: int
    provider: str
    upstream_service: str
    link: str
    quantity: int
    charge: Decimal
    cost: Decimal
    created: int
    state: OrderState = "dispatching"
    upstream_id: str | None = None
    runs: int | None = None
    status: str | None = None
    start_count: str | None = None
    remains: str | None = None
    currency: str | None = None  # of charge and cost: the gateway currency when placed
    checked: int = 0  # unix time of the last upstream status answer (the status cache)
    ledger: bool = False  # the charge was reserved from a prepaid client balance
    # the adds sent before (the one that placed it is the record's provider): none
    # stored when the first candidate took it
    tried: list[Attempt] = []

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class RefillRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    client: str
    order: int
    provider: str
    upstream_id: str
    created: int
    status: str | None = None
