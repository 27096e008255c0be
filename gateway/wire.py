"""What a client receives, byte for byte: the answers of SMM API v2 as Structs.

Field order is the order on the wire; panels parse these with hand-written PHP,
so a field is never renamed, reordered or retyped. Ids are integers (or, in a
multi answer, the text the client sent when it was not a number); money,
`start_count`, `remains`, `min` and `max` are strings; flags are booleans.
Every answer is encoded once, at the HTTP edge, with `ENCODER`.
"""

from __future__ import annotations

from typing import Any

import msgspec

ENCODER = msgspec.json.Encoder()


class Wire(msgspec.Struct):
    """Base of every downstream answer."""


class ErrorAnswer(Wire):
    error: str


class ServiceItem(Wire):
    service: int
    name: str
    type: str
    category: str
    rate: str
    min: str
    max: str
    refill: bool
    cancel: bool
    dripfeed: bool
    desc: str | msgspec.UnsetType = msgspec.UNSET  # left out when the service has none
    form: Any = None  # always present, null when the service has no form


class OrderAnswer(Wire):
    order: int


class StatusAnswer(Wire):
    charge: str
    start_count: str
    status: str
    remains: str
    currency: str


class RefillAnswer(Wire):
    refill: int


class RefillItem(Wire):
    order: int | str
    refill: int | ErrorAnswer


class RefillStatusAnswer(Wire):
    status: str


class RefillStatusItem(Wire):
    refill: int | str
    status: str | ErrorAnswer


class CancelItem(Wire):
    order: int | str
    cancel: int | ErrorAnswer


class BalanceAnswer(Wire):
    balance: str
    currency: str


class Encoded(msgspec.Struct, frozen=True):
    """An answer already encoded, with its ETag (`services`)."""

    body: bytes
    etag: str


Answer = (Wire | Encoded | dict[str, StatusAnswer | ErrorAnswer] | list[RefillItem]
          | list[RefillStatusItem] | list[CancelItem])
