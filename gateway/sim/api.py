"""The provider API, ``POST /api/v2``: the SMM API v2 actions in either dialect.

Parameters come form-encoded or as a JSON object. The two dialects differ mostly in
what they answer:

* ``toksmm``: HTTP 400/401 on errors, multi-status keyed by order id, a single
  refill's id as a string, cancel results under ``cancel``, money with 5 decimals;
  comments and usernames may be separated by commas as well as by new lines.
* ``testedsmm``: always HTTP 200, list-shaped multi answers, refill ids as numbers,
  cancel results as ``canceled`` booleans, money with 2 decimals; comments and
  usernames one a line.

Every request is logged before it is faulted or answered, so the control API sees
faulted ones too; faults, latency and rejections set through it are applied here.
A ``429`` or ``503`` fault answers with a ``Retry-After`` header (the simulator's
``retry_after`` seconds; none when that is unset), as rate limiters and
maintenance pages do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from gateway.sim.catalog import Service
from gateway.sim.codec import (
    DECODE,
    ENCODE,
    SimResponse,
    blank,
    json_id,
    json_response,
    money,
    split_ids,
    to_int,
)
from gateway.sim.options import retry_after_text
from gateway.sim.state import Order

if TYPE_CHECKING:
    from gateway.sim.simulator import Simulator

KEY_FIELDS = frozenset({"key", "api", "api_token"})
MAX_IDS = 100

_SPLIT_NL = re.compile(r"[\r\n]+")
_SPLIT_NL_COMMA = re.compile(r"[\r\n,]+")
_CF_HTML = (
    b'<!DOCTYPE html>\n<html lang="en-US">\n<head>\n<title>provider.example | 502: '
    b'Bad gateway</title>\n<meta charset="UTF-8" />\n<meta name="robots" '
    b'content="noindex, nofollow" />\n</head>\n<body>\n<div id="cf-wrapper">\n'
    b'<div id="cf-error-details" class="cf-error-details-wrapper">\n'
    b'<h1><span class="cf-error-type">Bad gateway</span> '
    b'<span class="cf-error-code">Error code 502</span></h1>\n'
    b'<p>Visit <a href="https://www.cloudflare.com/">cloudflare.com</a> '
    b'for more information.</p>\n</div>\n<div class="cf-error-footer">'
    b"<span>Cloudflare Ray ID: <strong>8a1b2c3d4e5f6a7b</strong></span> &bull; "
    b"<span>Performance &amp; security by Cloudflare</span></div>\n</div>\n"
    b"</body>\n</html>\n"
)

_TOO_MANY = b'{"error":"Too many requests"}'

# (simulator, parameters, parameters without the key as logged) -> answer
Action = Callable[["Simulator", dict[str, Any], dict[str, Any]], SimResponse]


def parse_params(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The request's parameters; unreadable JSON reads as none (the action then fails)."""
    ctype = headers.get("content-type", "")
    if "json" in ctype:
        try:
            data = DECODE(body) if body.strip() else {}
        except msgspec.DecodeError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items()}
    if not body:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def answer(sim: Simulator, headers: Mapping[str, str], body: bytes) -> SimResponse:
    """Log one ``/api/v2`` request, then fault it or answer it."""
    params = parse_params(headers, body)
    raw_action = params.get("action")
    action = raw_action.strip() if isinstance(raw_action, str) else ""
    fault = sim.take_fault(action)
    record = {k: v for k, v in params.items() if k not in KEY_FIELDS}
    sim.requests.append(
        {"action": action or None, "params": record, "fault": fault, "t": time.time()}
    )
    stat_key = action or "(none)"
    sim.stats[stat_key] = sim.stats.get(stat_key, 0) + 1
    sim.total += 1
    delay = sim.latency_ms / 1000.0 if sim.latency_ms > 0 else 0.0
    if fault is not None:
        return _faulted(sim, fault, delay)
    resp = _dispatch(sim, params, action, record)
    if delay:
        return resp._replace(delay=delay)
    return resp


def _faulted(sim: Simulator, fault: str, delay: float) -> SimResponse:
    if fault == "html":
        return SimResponse(502, _CF_HTML, "text/html; charset=UTF-8", delay)
    if fault == "500":
        return SimResponse(500, b"Internal Server Error", "text/plain", delay)
    if fault == "429" or fault == "503":
        headers: tuple[tuple[str, str], ...] = ()
        if sim.retry_after is not None:
            headers = (("Retry-After", retry_after_text(sim.retry_after)),)
        if fault == "429":
            return SimResponse(429, _TOO_MANY, "application/json", delay, headers=headers)
        return SimResponse(503, b"Service Unavailable", "text/plain", delay, headers=headers)
    return SimResponse(0, b"", "", delay, fault)  # hang / drop: the server misbehaves


def _dispatch(
    sim: Simulator, params: dict[str, Any], action: str, record: dict[str, Any]
) -> SimResponse:
    key = params.get("key") or params.get("api") or params.get("api_token")
    if not isinstance(key, str) or not key.strip():
        return _error(sim, "Invalid API key", 401)
    if sim.options.key is not None and key != sim.options.key:
        return _error(sim, "Invalid API key", 401)
    if not action:
        return _error(sim, "Missing action")
    handler = ACTIONS.get(action)
    if handler is None:
        return _error(sim, "Incorrect request")
    return handler(sim, params, record)


def _error(sim: Simulator, message: str, status: int = 400) -> SimResponse:
    return SimResponse(status if sim.toksmm else 200, ENCODE({"error": message}))


def _ids(raw: Any) -> list[str] | None:
    """The ids of a multi request; ``None`` when there are none or too many."""
    ids = split_ids(raw)
    return ids if ids and len(ids) <= MAX_IDS else None


# --------------------------------------------------------------------------- services


def _services(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    return SimResponse(200, sim.services_body())


# --------------------------------------------------------------------------- add


def _count_items(value: Any, commas: bool) -> int:
    if isinstance(value, list):
        return sum(1 for x in value if str(x).strip())
    if value is None:
        return 0
    splitter = _SPLIT_NL_COMMA if commas else _SPLIT_NL
    return sum(1 for part in splitter.split(str(value)) if part.strip())


def _form(params: dict[str, Any]) -> dict[str, Any]:
    form = params.get("form")
    if isinstance(form, str) and form.strip():
        try:
            form = DECODE(form)
        except msgspec.DecodeError:
            return {}
    return form if isinstance(form, dict) else {}


def _quantity(sim: Simulator, svc: Service, params: dict[str, Any]) -> int | None:
    """How many the add asks for; ``None`` if it does not say (rightly)."""
    if svc.kind in ("comments", "mentions"):
        # comment lines / usernames, sent as a parameter or inside the form
        name = "comments" if svc.kind == "comments" else "usernames"
        items = params.get(name)
        if blank(items):
            items = _form(params).get(name)
        n = _count_items(items, commas=sim.toksmm)
        if n:
            return n
    raw_q = params.get("quantity")
    if blank(raw_q):
        return 1 if svc.kind == "package" else None
    return to_int(raw_q)


def _drip_feed(params: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """``(runs, interval)``, both ``None`` without drip-feed; ``None`` if malformed."""
    if blank(params.get("runs")):
        return None, None
    runs = to_int(params.get("runs"))
    if runs is None or runs < 1:
        return None
    raw_i = params.get("interval")
    if blank(raw_i):
        raw_i = params.get("intervals")
    if blank(raw_i):
        return runs, None
    interval = to_int(raw_i)
    if interval is None or interval < 0:
        return None
    return runs, interval


def _add(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    rejection = sim.take_rejection()
    if rejection is not None:
        return _error(sim, rejection)
    sid = to_int(params.get("service"))
    svc = sim.catalog.get(sid) if sid is not None else None
    if svc is None:
        return _error(sim, "Incorrect service ID")
    link = params.get("link")
    if not isinstance(link, str) or not link.strip():
        return _error(sim, "Incorrect request")
    quantity = _quantity(sim, svc, params)
    if quantity is None:
        return _error(sim, "Incorrect request")
    if quantity < svc.min:
        return _error(sim, f"Quantity less than minimal {svc.min}")
    if quantity > svc.max:
        return _error(sim, f"Quantity more than maximal {svc.max}")
    drip_feed = _drip_feed(params)
    if drip_feed is None:
        return _error(sim, "Incorrect request")
    order = sim.book.place(svc, link, (quantity, *drip_feed), record, sim.behaviour_of(svc))
    if order is None:
        return _error(sim, "Not enough funds on balance")
    return SimResponse(200, b'{"order":%d}' % order.id)


# --------------------------------------------------------------------------- status


def _order_status(sim: Simulator, o: Order, now: float) -> dict[str, Any]:
    status, start, remains = sim.book.progress(o, now)
    charge = money(o.charge - o.refunded, sim.places)
    if sim.toksmm:
        return {
            "charge": charge,
            "start_count": str(start),
            "status": status,
            "remains": str(remains),
            "currency": sim.currency,
        }
    return {
        "status": status,
        "charge": charge,
        "start_count": str(start),
        "remains": str(remains),
        "currency": sim.currency,
    }


def _status_many(sim: Simulator, ids: list[str], now: float) -> SimResponse:
    if sim.toksmm:
        multi: dict[str, Any] = {}
        for raw in ids:
            o = sim.book.lookup(raw)
            multi[raw] = _order_status(sim, o, now) if o else {"error": "Incorrect order ID"}
        return json_response(multi)
    items: list[dict[str, Any]] = []
    for raw in ids:
        o = sim.book.lookup(raw)
        if o is None:
            items.append({"order": json_id(raw), "error": "Incorrect order ID"})
        else:
            items.append({"order": o.id, **_order_status(sim, o, now)})
    return json_response(items)


def _status(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    now = sim.book.clock.now()
    if not blank(params.get("orders")):
        ids = _ids(params["orders"])
        if ids is None:
            return _error(sim, "Incorrect request")
        return _status_many(sim, ids, now)
    raw_one = params.get("order")
    if blank(raw_one):
        return _error(sim, "Incorrect request")
    o = sim.book.lookup(str(raw_one))
    if o is None:
        return _error(sim, "Incorrect order ID")
    return json_response(_order_status(sim, o, now))


# --------------------------------------------------------------------------- refill


def _refill_item(sim: Simulator, raw: str, now: float) -> dict[str, Any]:
    o = sim.book.lookup(raw)
    if o is None:
        return {"order": json_id(raw), "refill": {"error": "Incorrect order ID"}}
    result = sim.book.new_refill(o, now)
    return {"order": o.id, "refill": result if isinstance(result, int) else {"error": result}}


def _refill(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    now = sim.book.clock.now()
    if not blank(params.get("orders")):
        ids = _ids(params["orders"])
        if ids is None:
            return _error(sim, "Incorrect request")
        return json_response([_refill_item(sim, raw, now) for raw in ids])
    raw_one = params.get("order")
    if blank(raw_one):
        return _error(sim, "Incorrect request")
    o = sim.book.lookup(str(raw_one))
    if o is None:
        return _error(sim, "Incorrect order ID")
    result = sim.book.new_refill(o, now)
    if isinstance(result, str):
        return _error(sim, result)
    return json_response({"refill": str(result) if sim.toksmm else result})


def _refill_status(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    now = sim.book.clock.now()
    if not blank(params.get("refills")):
        ids = _ids(params["refills"])
        if ids is None:
            return _error(sim, "Incorrect request")
        items: list[dict[str, Any]] = []
        for raw in ids:
            r = sim.book.lookup_refill(raw)
            if r is None:
                items.append({"refill": json_id(raw), "status": {"error": "Refill not found"}})
            else:
                items.append({"refill": r.id, "status": sim.book.refill_status(r, now)})
        return json_response(items)
    raw_one = params.get("refill")
    if blank(raw_one):
        return _error(sim, "Incorrect request")
    r = sim.book.lookup_refill(raw_one)
    if r is None:
        return _error(sim, "Refill not found")
    return json_response({"status": sim.book.refill_status(r, now)})


# --------------------------------------------------------------------------- cancel


def _cancel_item(sim: Simulator, raw: str, now: float) -> dict[str, Any]:
    o = sim.book.lookup(raw)
    if o is None:
        if sim.toksmm:
            return {"order": json_id(raw), "cancel": {"error": "Incorrect order ID"}}
        return {"order": json_id(raw), "error": "Incorrect order ID"}
    why = sim.book.cancel(o, now)
    if sim.toksmm:
        return {"order": o.id, "cancel": 1 if why is None else {"error": why}}
    return {"order": o.id, "canceled": why is None}


def _cancel(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    now = sim.book.clock.now()
    raw_ids = params.get("orders")
    if blank(raw_ids):
        raw_ids = params.get("order")
    if blank(raw_ids):
        return _error(sim, "Incorrect request")
    ids = _ids(raw_ids)
    if ids is None:
        return _error(sim, "Incorrect request")
    return json_response([_cancel_item(sim, raw, now) for raw in ids])


# --------------------------------------------------------------------------- balance


def _balance(sim: Simulator, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
    sim.book.settle_all()
    return SimResponse(
        200, ENCODE({"balance": money(sim.book.balance, sim.places), "currency": sim.currency})
    )


ACTIONS: dict[str, Action] = {
    "services": _services,
    "add": _add,
    "status": _status,
    "refill": _refill,
    "refill_status": _refill_status,
    "cancel": _cancel,
    "balance": _balance,
}
