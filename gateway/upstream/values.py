"""Single upstream values read tolerantly: numbers as text or floats, ids, flags,
and the many spellings of order and refill statuses, to one standard form.

Everything here is pure and never raises: a value it cannot read is None.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_STATUS = {
    "pending": "Pending",
    "waiting": "Pending",
    "in progress": "In progress",
    "inprogress": "In progress",
    "active": "In progress",
    "running": "In progress",
    "processing": "Processing",
    "completed": "Completed",
    "complete": "Completed",
    "processed": "Completed",
    "done": "Completed",
    "success": "Completed",
    "partial": "Partial",
    "partially": "Partial",
    "partially completed": "Partial",
    "canceled": "Canceled",
    "cancelled": "Canceled",
    "cancel": "Canceled",
    "failed": "Canceled",
    "fail": "Canceled",
    "error": "Canceled",
    "refunded": "Refunded",
    "refund": "Refunded",
}

_REFILL_STATUS = {
    "pending": "Pending",
    "in progress": "In progress",
    "inprogress": "In progress",
    "processing": "In progress",
    "completed": "Completed",
    "complete": "Completed",
    "done": "Completed",
    "success": "Completed",
    "rejected": "Rejected",
    "canceled": "Rejected",
    "cancelled": "Rejected",
    "error": "Error",
    "failed": "Error",
    "fail": "Error",
}

def _fold(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


_status_seen: dict[str, str | None] = {}  # a provider's exact words -> their reading


def order_status(value: Any) -> str | None:
    """Standard spelling of an order status, or None if unrecognised."""
    if not isinstance(value, str):
        return None
    seen = _status_seen.get(value, "")
    if seen != "":  # a multi-status answer repeats a handful of words a hundred times
        return seen
    folded = _fold(value)
    reading = _STATUS.get(folded) or _STATUS.get(folded.replace(" ", ""))
    if len(_status_seen) < 1024:
        _status_seen[value] = reading
    return reading


def refill_status(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    folded = _fold(value)
    return _REFILL_STATUS.get(folded) or _REFILL_STATUS.get(folded.replace(" ", ""))


def service_type(value: Any) -> str:
    """`custom_comments` -> `Custom Comments`; `Default` stays; missing -> Default."""
    if not isinstance(value, str) or not value.strip():
        return "Default"
    text = value.strip()
    if "_" in text or text.islower():
        return " ".join(w.capitalize() for w in text.replace("_", " ").split())
    return text


def decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, str)):
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        # 1e1000000 would take minutes to turn into an int: no real figure is that big
        return d if d.is_finite() and d.adjusted() <= 18 else None
    return None


def integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    d = decimal(value)
    if d is None or d != d.to_integral_value():
        return None
    return int(d)


def flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        folded = value.strip().lower()
        if folded in ("1", "true", "yes", "on"):
            return True
        if folded in ("0", "false", "no", "off", ""):
            return False
    return None


def ident(value: Any) -> str | None:
    """An upstream id as text: ints, numeric strings, and the odd `ord_...`."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def count_text(value: Any) -> str | None:
    """start_count / remains: keep numbers as canonical text, drop junk like `Unknown`."""
    if type(value) is str and value.isdigit() and value.isascii() and len(value) < 19:
        return str(int(value))  # the common case: plain digits ("0042" -> "42")
    if type(value) is int and abs(value) < 10**18:
        return str(value)
    d = decimal(value)
    if d is None:
        return None
    return str(int(d)) if d == d.to_integral_value() else str(d)
