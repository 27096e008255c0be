"""The tolerant reader: every upstream answer variant seen in the wild, to one typed model.

Providers all speak "SMM API v2" and no two speak it alike: numbers come as
strings or floats, ids as ints or strings, multi answers as objects keyed by id
or as lists, errors in half a dozen shapes (`{"error": ..}`, `{"errors": ..}`,
`{"status": "fail", "message": ..}`, HTML pages, empty bodies). Everything that
knows about those variants lives here and in `values`; the rest of the gateway
sees `UpstreamService`, `UpstreamStatus`, plain ids and the errors of
`gateway.errors`.

Per-id failures inside a multi answer are returned as `ItemError` values, not
raised, so one bad id never hides the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from gateway.errors import BadAnswer, Rejected, Unavailable
from gateway.models import ItemError, UpstreamService, UpstreamStatus
from gateway.upstream.classify import elsewhere
from gateway.upstream.values import (
    count_text,
    decimal,
    flag,
    ident,
    integer,
    order_status,
    refill_status,
    service_type,
)

_json = msgspec.json.Decoder()


# --- errors -----------------------------------------------------------------

_MESSAGE_KEYS = ("message", "msg", "text", "detail")


def _message_of(obj: Mapping[str, Any]) -> str | None:
    """The text of an error object such as `{"code": 42, "message": "..."}`."""
    for key in _MESSAGE_KEYS:
        value = obj.get(key)
        if value:
            return str(value)
    return None


def error_message(obj: Any) -> str | None:
    """The message of any error shape seen upstream, or None if `obj` is not one."""
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, Mapping):
        return None
    err = obj.get("error")
    if isinstance(err, str) and err:
        return err
    if isinstance(err, Mapping):
        return _message_of(err) or "error"
    errs = obj.get("errors")
    if errs and isinstance(errs, (str, list, Mapping)):
        first: Any = errs
        if isinstance(errs, list):
            first = errs[0]
        elif isinstance(errs, Mapping):
            first = _message_of(errs) or next(iter(errs.values()))
            if isinstance(first, list) and first:
                first = first[0]
        if isinstance(first, Mapping):
            # [{"code": 42, "message": "..."}], {"link": [{"message": "..."}]}
            return error_message(first) or _message_of(first) or str(first)
        return str(first)
    status = obj.get("status")
    if isinstance(status, str) and status.lower() in ("fail", "failed", "error") and (
        "message" in obj or "msg" in obj
    ):
        return str(obj.get("message") or obj.get("msg"))
    return None


def rejection(message: str, raw: str = "") -> Rejected:
    return Rejected(message, raw, elsewhere=elsewhere(message))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def decode(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Any:
    """Decode one upstream answer. Raises on transport-level and top-level errors."""
    raw = body[:500].decode("utf-8", "replace")
    if status >= 500 or status == 429:
        raise Unavailable(f"HTTP {status}", raw, _retry_after(headers or {}))
    if not body.strip():
        raise BadAnswer(f"empty answer (HTTP {status})", raw)
    try:
        # PHP panels saved with a byte order mark put it before every answer
        obj = _json.decode(body.removeprefix(b"\xef\xbb\xbf"))
    except (msgspec.DecodeError, RecursionError):  # nested past the decoder's depth too
        raise BadAnswer(f"not JSON (HTTP {status})", raw) from None
    if isinstance(obj, Mapping):
        message = error_message(obj)
        if message is not None:
            raise rejection(message, raw)
    elif isinstance(obj, str):
        raise rejection(obj, raw)
    if status >= 400:
        raise BadAnswer(f"HTTP {status} without an error message", raw)
    return obj


def _shape(what: str, obj: Any) -> BadAnswer:
    return BadAnswer(f"unexpected {what} answer", msgspec.json.encode(obj)[:500].decode())


# --- actions ----------------------------------------------------------------


def services(obj: Any) -> list[UpstreamService]:
    items: Iterable[Any]
    if isinstance(obj, Mapping):
        inner = obj.get("services") or obj.get("data")
        items = inner if isinstance(inner, list) else list(obj.values())
    elif isinstance(obj, list):
        items = obj
    else:
        raise _shape("services", obj)
    out: list[UpstreamService] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        sid = ident(item.get("service", item.get("id")))
        rate = decimal(item.get("rate"))
        if sid is None or rate is None or rate < 0:
            continue
        lo = integer(item.get("min")) or 1
        hi = integer(item.get("max")) or lo
        desc = item.get("desc") or item.get("description")
        form = item.get("form")
        out.append(UpstreamService(
            service=sid,
            name=str(item.get("name") or f"Service {sid}"),
            type=service_type(item.get("type")),
            category=str(item.get("category") or ""),
            rate=rate,
            min=lo,
            max=max(hi, lo),
            refill=flag(item.get("refill")),
            cancel=flag(item.get("cancel")),
            dripfeed=flag(item.get("dripfeed")),
            desc=str(desc) if desc else None,
            form=form if isinstance(form, (Mapping, list)) and form else None,
        ))
    return out


def add(obj: Any) -> str:
    if isinstance(obj, Mapping):
        oid = ident(obj.get("order", obj.get("order_id", obj.get("id"))))
        if oid is not None:
            return oid
    raise _shape("add", obj)


def _status(item: Mapping[str, Any]) -> UpstreamStatus | ItemError:
    # {"status": "fail", "message": ...} is an error about the id, not a failed order
    message = error_message(item) if "status" not in item or "message" in item else None
    if message is not None:
        return ItemError(message)
    status = order_status(item.get("status"))
    if status is None:
        if isinstance(item.get("status"), Mapping):
            return ItemError(error_message(item["status"]) or "error")
        status = "In progress"  # an unknown word: keep polling rather than guess an end
    return UpstreamStatus(
        status=status,
        charge=decimal(item.get("charge")),
        start_count=count_text(item.get("start_count")),
        remains=count_text(item.get("remains")),
        currency=item.get("currency") if isinstance(item.get("currency"), str) else None,
    )


def status_one(obj: Any) -> UpstreamStatus:
    if isinstance(obj, Mapping):
        result = _status(obj)
        if isinstance(result, UpstreamStatus):
            return result
        raise rejection(result.message)
    raise _shape("status", obj)


def _keyed(obj: Any, id_field: str) -> Iterable[tuple[str | None, Any]]:
    """(id, item) pairs from an object keyed by id or a list of items naming their id."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield ident(key), value
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, Mapping):
                yield ident(item.get(id_field)), item
    else:
        raise _shape("multi", obj)


def status_many(obj: Any) -> dict[str, UpstreamStatus | ItemError]:
    out: dict[str, UpstreamStatus | ItemError] = {}
    for oid, item in _keyed(obj, "order"):
        if oid is None:
            continue
        if isinstance(item, Mapping):
            out[oid] = _status(item)
        elif isinstance(item, str):
            out[oid] = ItemError(item)
    return out


def refill_one(obj: Any) -> str:
    if isinstance(obj, Mapping):
        value = obj.get("refill", obj.get("refill_id", obj.get("id")))
        rid = ident(value)
        if rid is not None:
            return rid
        if isinstance(value, Mapping):
            raise rejection(error_message(value) or "error")
    raise _shape("refill", obj)


def refill_many(obj: Any) -> dict[str, str | ItemError]:
    out: dict[str, str | ItemError] = {}
    for oid, item in _keyed(obj, "order"):
        if oid is None:
            continue
        if isinstance(item, Mapping):
            value = item.get("refill")
            rid = ident(value)
            if rid is not None and not isinstance(value, Mapping):
                out[oid] = rid
            else:
                out[oid] = ItemError(error_message(value) or error_message(item) or "error")
        elif isinstance(item, (int, str)):
            rid = ident(item)
            out[oid] = rid if rid and rid.isdigit() else ItemError(str(item))
    return out


def _refill_status(value: Any) -> str | ItemError:
    status = refill_status(value)
    if status is not None:
        return status
    return ItemError(error_message(value) or "Refill not found")


def refill_status_one(obj: Any) -> str:
    if isinstance(obj, Mapping) and "status" in obj:
        result = _refill_status(obj["status"])
        if isinstance(result, ItemError):
            raise rejection(result.message)
        return result
    raise _shape("refill_status", obj)


def refill_status_many(obj: Any) -> dict[str, str | ItemError]:
    out: dict[str, str | ItemError] = {}
    for rid, item in _keyed(obj, "refill"):
        if rid is None:
            continue
        value = item.get("status") if isinstance(item, Mapping) else item
        if value is None and isinstance(item, Mapping):
            value = item
        out[rid] = _refill_status(value)
    return out


def cancel_many(obj: Any) -> dict[str, bool | ItemError]:
    """True: canceled. False: the provider refused. ItemError: a per-id error."""
    out: dict[str, bool | ItemError] = {}
    for oid, item in _keyed(obj, "order"):
        if oid is None:
            continue
        if not isinstance(item, Mapping):
            ok = flag(item)
            out[oid] = ok if ok is not None else ItemError(str(item))
            continue
        value = item.get("cancel", item.get("canceled", item.get("cancelled")))
        if isinstance(value, Mapping):
            out[oid] = ItemError(error_message(value) or "error")
        elif value is None:
            out[oid] = ItemError(error_message(item) or "error")
        else:
            ok = flag(value)
            out[oid] = ok if ok is not None else ItemError(str(value))
    return out


def balance(obj: Any) -> tuple[Decimal, str | None]:
    if isinstance(obj, Mapping):
        amount = decimal(obj.get("balance"))
        if amount is not None:
            currency = obj.get("currency")
            return amount, currency if isinstance(currency, str) and currency else None
    raise _shape("balance", obj)
