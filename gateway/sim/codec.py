"""Values in and answers out: what the provider API and the control API share.

Request values arrive as form strings or JSON values, so numbers are parsed from
either; money is written as a string with a dialect's fixed number of decimals.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import msgspec

ENCODE = msgspec.json.Encoder().encode
DECODE = msgspec.json.decode

EIGHT_PLACES = Decimal("1e-8")
_PLACES = {n: Decimal(1).scaleb(-n) for n in range(9)}


class SimResponse(NamedTuple):
    """What :meth:`Simulator.handle` decided; the HTTP layer carries it out.

    ``fault`` is ``"hang"`` or ``"drop"`` when the transport must misbehave (then
    ``status``/``body`` are unused); ``delay`` is seconds to wait before answering;
    ``headers`` are extra response headers (name, value), such as ``Retry-After``.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    delay: float = 0.0
    fault: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


NOT_FOUND = SimResponse(404, b'{"error":"Not Found"}')
OK = SimResponse(200, b'{"ok":true}')


def json_response(obj: Any, status: int = 200) -> SimResponse:
    """``obj`` as a JSON answer."""
    return SimResponse(status, ENCODE(obj))


def to_int(value: Any) -> int | None:
    """Parse an integer sent as int or (numeric) string; ``None`` if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if value is None:
        return None
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        dec = Decimal(text)
    except InvalidOperation:
        return None
    if dec.is_finite() and dec == dec.to_integral_value():
        return int(dec)
    return None


def blank(value: Any) -> bool:
    """Absent or whitespace only: panels send empty fields for unused parameters."""
    return value is None or (isinstance(value, str) and not value.strip())


def split_ids(raw: Any) -> list[str]:
    """The ids of a comma-separated (or JSON list) ``orders``/``refills`` parameter."""
    if isinstance(raw, list):
        items = [str(x).strip() for x in raw]
    else:
        items = [x.strip() for x in str(raw).split(",")]
    return [x for x in items if x]


def json_id(text: str) -> int | str:
    """An id echoed back as sent: a number if it is one, else the text."""
    n = to_int(text)
    return n if n is not None else text


def money(value: Decimal, places: int) -> str:
    """Format with at least ``places`` decimals, never dropping digits (max 8)."""
    q = value.quantize(_PLACES[places])
    if q != value:
        q = value.quantize(EIGHT_PLACES).normalize()
        if q.as_tuple().exponent > -places:  # type: ignore[operator]
            q = q.quantize(_PLACES[places])
    return format(q, "f")
