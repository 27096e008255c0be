"""A fast, realistic SMM API v2 provider simulator.

``smm-gateway simulate`` runs this module as a stand-alone upstream provider; the
gateway's test-suite and benchmarks use it as a real HTTP server. It speaks one of
two provider dialects (see ``/work/shared/seeds``):

* ``toksmm``: the richer dialect, HTTP 400/401 on errors, multi-status keyed by id,
  rates/charges with 5 decimals, ``min``/``max`` as strings, boolean service flags.
* ``testedsmm``: always HTTP 200, list-shaped multi answers, 2 decimal money,
  ``min``/``max`` as ints, 0/1 service flags.

The server is a small HTTP/1.1 implementation on asyncio + ``httptools`` (keep-alive,
Content-Length and chunked request bodies) so that it is never the bottleneck and so
that it can misbehave on purpose: answer with a Cloudflare-like HTML 502, a plain 500,
never answer, or drop the TCP connection.

State (orders, refills, balance, request log) lives in memory in :class:`Simulator`.
Orders progress lazily from their age: ``Pending`` -> ``In progress`` -> final
(``Completed``, or ``Partial`` when the link contains ``partial``). Money is kept as
:class:`decimal.Decimal` and written as strings.

A JSON control API under ``/_sim/`` (no key) lets tests inspect the request log and
orders, inject faults, latency and rejections, force order statuses, and reset.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import httptools
import msgspec

__all__ = [
    "DEFAULT_CATALOG",
    "SimOptions",
    "SimResponse",
    "Simulator",
    "load_catalog",
    "main",
    "serve",
    "start_server",
]

DIALECTS = ("toksmm", "testedsmm")
FAULTS = ("html", "500", "hang", "drop")
FINAL_STATUSES = frozenset({"Completed", "Partial", "Canceled", "Refunded"})
ORDER_STATUSES = (
    "Pending",
    "In progress",
    "Processing",
    "Completed",
    "Partial",
    "Canceled",
    "Refunded",
)
KEY_FIELDS = frozenset({"key", "api", "api_token"})
MAX_IDS = 100
REQUEST_LOG_CAP = 100_000
MAX_BODY = 16 * 1024 * 1024
HANG_SECONDS = 3600.0

_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.decode
_SPLIT_NL = re.compile(r"[\r\n]+")
_SPLIT_NL_COMMA = re.compile(r"[\r\n,]+")
_EIGHT_PLACES = Decimal("1e-8")
_PLACES = {n: Decimal(1).scaleb(-n) for n in range(9)}

DEFAULT_CATALOG: list[dict[str, Any]] = [
    {
        "service": 1,
        "name": "Followers",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.50",
        "min": 50,
        "max": 10000,
        "refill": True,
        "cancel": True,
        "dripfeed": True,
    },
    {
        "service": 2,
        "name": "Likes",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.20",
        "min": 10,
        "max": 50000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 3,
        "name": "Views",
        "type": "Default",
        "category": "TikTok",
        "rate": "0.01",
        "min": 100,
        "max": 1000000,
        "refill": False,
        "cancel": False,
        "dripfeed": True,
    },
    {
        "service": 4,
        "name": "Custom Comments",
        "type": "Custom Comments",
        "category": "TikTok",
        "rate": "5.00",
        "min": 10,
        "max": 1500,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
        "form": {"fields": [{"name": "comments", "type": "textarea", "required": True}]},
    },
    {
        "service": 5,
        "name": "Mentions",
        "type": "Mentions Custom List",
        "category": "Instagram",
        "rate": "3.00",
        "min": 10,
        "max": 1000,
        "refill": False,
        "cancel": False,
        "dripfeed": False,
    },
    {
        "service": 6,
        "name": "Package",
        "type": "Package",
        "category": "TikTok",
        "rate": "2.50",
        "min": 1,
        "max": 1,
        "refill": False,
        "cancel": False,
        "dripfeed": False,
        "form": {
            "fields": [
                {"name": "package", "type": "select", "required": True, "options": ["basic", "pro"]}
            ]
        },
    },
    {
        "service": 7,
        "name": "Poll votes",
        "type": "Poll",
        "category": "Telegram",
        "rate": "1.20",
        "min": 50,
        "max": 10000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 8,
        "name": "Subscriptions",
        "type": "Subscriptions",
        "category": "Instagram",
        "rate": "4.00",
        "min": 50,
        "max": 10000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
    {
        "service": 9,
        "name": "Comment Likes",
        "type": "Comment Likes",
        "category": "YouTube",
        "rate": "0.80",
        "min": 20,
        "max": 5000,
        "refill": False,
        "cancel": True,
        "dripfeed": False,
    },
]


# --------------------------------------------------------------------------- options


@dataclass
class SimOptions:
    """Configuration of one simulated provider."""

    dialect: str = "toksmm"  # "toksmm" | "testedsmm"
    catalog: list[dict[str, Any]] | None = None  # either seed's shape; None -> default
    balance: Decimal = Decimal(1000)
    currency: str = "USD"
    key: str | None = None  # None -> any non-empty key accepted
    latency_ms: float = 0.0  # added before every /api/v2 answer
    fault: str | None = None  # None | "html" | "500" | "hang" | "drop"
    fault_rate: float = 0.0  # 0..1 fraction of /api/v2 requests hit by the fault
    order_start: int = 1  # first order id handed out (refill ids too)
    progress_s: float = 2.0  # time for an order to go Pending -> In progress -> final


class SimResponse(NamedTuple):
    """What :meth:`Simulator.handle` decided; the HTTP layer carries it out.

    ``fault`` is ``"hang"`` or ``"drop"`` when the transport must misbehave (then
    ``status``/``body`` are unused); ``delay`` is seconds to wait before answering.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    delay: float = 0.0
    fault: str | None = None


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class _Service:
    id: int
    name: str
    type: str
    category: str
    rate: Decimal
    min: int
    max: int
    refill: bool
    cancel: bool
    dripfeed: bool
    form: Any
    kind: str  # "default" | "comments" | "mentions" | "package"


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float | Decimal):
        return value != 0
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y")


def _to_int(value: Any) -> int | None:
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


def _service_kind(type_: str) -> str:
    t = type_.lower().replace("_", " ").replace("-", " ").strip()
    if t == "package":
        return "package"
    if "comment" in t and "like" not in t:
        return "comments"
    if t == "mentions custom list":
        return "mentions"
    return "default"


def _normalise_service(raw: Mapping[str, Any]) -> _Service:
    if not isinstance(raw, Mapping):
        raise TypeError(f"service entry is not an object: {raw!r}")
    sid = _to_int(raw.get("service", raw.get("id")))
    if sid is None:
        raise ValueError(f"service without an integer id: {raw!r}")
    try:
        rate = Decimal(str(raw.get("rate", "0")).strip())
    except InvalidOperation as exc:
        raise ValueError(f"service {sid}: bad rate {raw.get('rate')!r}") from exc
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"service {sid}: bad rate {raw.get('rate')!r}")
    lo = _to_int(raw.get("min", 1))
    hi = _to_int(raw.get("max", 100000))
    if lo is None or hi is None:
        raise ValueError(f"service {sid}: bad min/max")
    form = raw.get("form")
    if isinstance(form, str):
        try:
            form = _DECODE(form) if form.strip() else None
        except msgspec.DecodeError:
            form = None
    if not form:
        form = None
    type_ = str(raw.get("type") or "Default")
    return _Service(
        id=sid,
        name=str(raw.get("name") or f"Service {sid}"),
        type=type_,
        category=str(raw.get("category") or "Default"),
        rate=rate,
        min=lo,
        max=hi,
        refill=_to_bool(raw.get("refill")),
        cancel=_to_bool(raw.get("cancel")),
        dripfeed=_to_bool(raw.get("dripfeed")),
        form=form,
        kind=_service_kind(type_),
    )


def _normalise_catalog(services: Iterable[Mapping[str, Any]]) -> dict[int, _Service]:
    out: dict[int, _Service] = {}
    for raw in services:
        svc = _normalise_service(raw)
        out[svc.id] = svc
    return out


def load_catalog(path: str) -> list[dict[str, Any]]:
    """Read a JSON catalog file: a list of services in either dialect's shape.

    An object with a ``services`` list is accepted too. The entries are validated
    (raises ``ValueError``/``TypeError``) and returned as read; rates are parsed as ``Decimal``.
    """
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh, parse_float=Decimal)
    if isinstance(data, dict) and isinstance(data.get("services"), list):
        data = data["services"]
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a JSON list of services")
    _normalise_catalog(data)
    return data


# --------------------------------------------------------------------------- helpers


def _money(value: Decimal, places: int) -> str:
    """Format with at least ``places`` decimals, never dropping digits (max 8)."""
    q = value.quantize(_PLACES[places])
    if q != value:
        q = value.quantize(_EIGHT_PLACES).normalize()
        if q.as_tuple().exponent > -places:  # type: ignore[operator]
            q = q.quantize(_PLACES[places])
    return format(q, "f")


def _split_ids(raw: Any) -> list[str]:
    if isinstance(raw, list):
        items = [str(x).strip() for x in raw]
    else:
        items = [x.strip() for x in str(raw).split(",")]
    return [x for x in items if x]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _json_id(text: str) -> int | str:
    n = _to_int(text)
    return n if n is not None else text


@dataclass(slots=True)
class _Order:
    id: int
    service: int
    link: str
    quantity: int
    runs: int | None
    interval: int | None
    total: int
    charge: Decimal
    created: float  # monotonic
    params: dict[str, Any]
    refill_ok: bool
    cancel_ok: bool
    partial: bool
    start_base: int
    refunded: Decimal = Decimal(0)
    forced: tuple[str, int, int] | None = None  # (status, start_count, remains)


@dataclass(slots=True)
class _Refill:
    id: int
    order: int
    created: float


def _json(obj: Any, status: int = 200) -> SimResponse:
    return SimResponse(status, _ENCODE(obj))


_NOT_FOUND = SimResponse(404, b'{"error":"Not Found"}')
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


# --------------------------------------------------------------------------- simulator


class Simulator:
    """In-memory provider state plus the request logic (no I/O).

    :meth:`handle` takes one HTTP request and returns a :class:`SimResponse`.
    """

    def __init__(self, options: SimOptions) -> None:
        if options.dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {options.dialect!r} (use one of {DIALECTS})")
        if options.fault is not None and options.fault not in FAULTS:
            raise ValueError(f"unknown fault {options.fault!r} (use one of {FAULTS})")
        self.options = options
        self.dialect = options.dialect
        self.toksmm = options.dialect == "toksmm"
        self.places = 5 if self.toksmm else 2
        source = options.catalog if options.catalog is not None else DEFAULT_CATALOG
        self._initial_catalog = _normalise_catalog(source)
        self._actions: dict[str, Callable[[dict[str, Any], dict[str, Any]], SimResponse]] = {
            "services": self._services,
            "add": self._add,
            "status": self._status,
            "refill": self._refill,
            "refill_status": self._refill_status,
            "cancel": self._cancel,
            "balance": self._balance,
        }
        self.reset()

    # ----------------------------------------------------------------- state

    def reset(self) -> None:
        """Back to the state the simulator was started with."""
        o = self.options
        self.catalog: dict[int, _Service] = dict(self._initial_catalog)
        self.balance = Decimal(str(o.balance))
        self.currency = o.currency
        self.latency_ms = float(o.latency_ms)
        self.fault: str | None = o.fault
        self.fault_rate = float(o.fault_rate)
        self.reject_error: str | None = None
        self.reject_count = 0
        self.orders: dict[int, _Order] = {}
        self.refills: dict[int, _Refill] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_CAP)
        self.stats: dict[str, int] = {}
        self.total = 0
        self._next_order = o.order_start
        self._next_refill = o.order_start
        self._unsettled: set[int] = set()
        self._services_body: bytes | None = None

    def set_catalog(self, services: Iterable[Mapping[str, Any]]) -> None:
        self.catalog = _normalise_catalog(services)
        self._services_body = None

    # ----------------------------------------------------------------- entry point

    def handle(
        self, path: str, method: str, headers: Mapping[str, str], body: bytes
    ) -> SimResponse:
        """Answer one request. ``path`` may carry a query string; header names lower case."""
        target, _, query = path.partition("?")
        if target == "/api/v2" or target == "/api/v2/":
            if method != "POST":
                return _NOT_FOUND
            return self._api(headers, body)
        if target.startswith("/_sim/"):
            try:
                return self._control(method, target[6:].strip("/"), query, body)
            except (
                ValueError,
                TypeError,
                AttributeError,
                InvalidOperation,
                msgspec.DecodeError,
            ) as exc:
                return _json({"error": f"Bad control request: {exc}"}, 400)
        return _NOT_FOUND

    # ----------------------------------------------------------------- /api/v2

    @staticmethod
    def _parse_params(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ctype = headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = _DECODE(body) if body.strip() else {}
            except msgspec.DecodeError:
                return {}
            if not isinstance(data, dict):
                return {}
            return {str(k): v for k, v in data.items()}
        if not body:
            return {}
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _api(self, headers: Mapping[str, str], body: bytes) -> SimResponse:
        params = self._parse_params(headers, body)
        raw_action = params.get("action")
        action = raw_action.strip() if isinstance(raw_action, str) else ""
        fault = None
        if self.fault is not None and self.fault_rate > 0 and random.random() < self.fault_rate:
            fault = self.fault
        record = {k: v for k, v in params.items() if k not in KEY_FIELDS}
        self.requests.append(
            {"action": action or None, "params": record, "fault": fault, "t": time.time()}
        )
        stat_key = action or "(none)"
        self.stats[stat_key] = self.stats.get(stat_key, 0) + 1
        self.total += 1
        delay = self.latency_ms / 1000.0 if self.latency_ms > 0 else 0.0
        if fault is not None:
            if fault == "html":
                return SimResponse(502, _CF_HTML, "text/html; charset=UTF-8", delay)
            if fault == "500":
                return SimResponse(500, b"Internal Server Error", "text/plain", delay)
            return SimResponse(0, b"", "", delay, fault)
        resp = self._dispatch(params, action, record)
        if delay:
            return resp._replace(delay=delay)
        return resp

    def _dispatch(self, params: dict[str, Any], action: str, record: dict[str, Any]) -> SimResponse:
        key = params.get("key") or params.get("api") or params.get("api_token")
        if not isinstance(key, str) or not key.strip():
            return self._err("Invalid API key", 401)
        if self.options.key is not None and key != self.options.key:
            return self._err("Invalid API key", 401)
        if not action:
            return self._err("Missing action")
        handler = self._actions.get(action)
        if handler is None:
            return self._err("Incorrect request")
        return handler(params, record)

    def _err(self, message: str, status: int = 400) -> SimResponse:
        return SimResponse(status if self.toksmm else 200, _ENCODE({"error": message}))

    # ----------------------------------------------------------------- services

    def _services(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        if self._services_body is None:
            self._services_body = _ENCODE([self._service_obj(s) for s in self.catalog.values()])
        return SimResponse(200, self._services_body)

    def _service_obj(self, s: _Service) -> dict[str, Any]:
        if self.toksmm:
            return {
                "service": s.id,
                "name": s.name,
                "type": s.type,
                "category": s.category,
                "rate": _money(s.rate, 5),
                "min": str(s.min),
                "max": str(s.max),
                "refill": s.refill,
                "cancel": s.cancel,
                "form": s.form,
            }
        return {
            "service": s.id,
            "name": s.name,
            "type": s.type,
            "category": s.category,
            "rate": _money(s.rate, 2),
            "min": s.min,
            "max": s.max,
            "refill": int(s.refill),
            "cancel": int(s.cancel),
            "dripfeed": int(s.dripfeed),
        }

    # ----------------------------------------------------------------- add

    def _count_items(self, value: Any, commas: bool) -> int:
        if isinstance(value, list):
            return sum(1 for x in value if str(x).strip())
        if value is None:
            return 0
        splitter = _SPLIT_NL_COMMA if commas else _SPLIT_NL
        return sum(1 for part in splitter.split(str(value)) if part.strip())

    @staticmethod
    def _form(params: dict[str, Any]) -> dict[str, Any]:
        form = params.get("form")
        if isinstance(form, str) and form.strip():
            try:
                form = _DECODE(form)
            except msgspec.DecodeError:
                return {}
        return form if isinstance(form, dict) else {}

    def _add(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        if self.reject_error is not None and self.reject_count != 0:
            message = self.reject_error
            if self.reject_count > 0:
                self.reject_count -= 1
                if self.reject_count == 0:
                    self.reject_error = None
            return self._err(message)
        sid = _to_int(params.get("service"))
        svc = self.catalog.get(sid) if sid is not None else None
        if svc is None:
            return self._err("Incorrect service ID")
        link = params.get("link")
        if not isinstance(link, str) or not link.strip():
            return self._err("Incorrect request")
        quantity: int | None = None
        if svc.kind == "comments":
            comments = params.get("comments")
            if _blank(comments):
                comments = self._form(params).get("comments")
            n = self._count_items(comments, commas=self.toksmm)
            quantity = n or None
        elif svc.kind == "mentions":
            usernames = params.get("usernames")
            if _blank(usernames):
                usernames = self._form(params).get("usernames")
            n = self._count_items(usernames, commas=self.toksmm)
            quantity = n or None
        if quantity is None:
            raw_q = params.get("quantity")
            if _blank(raw_q):
                if svc.kind != "package":
                    return self._err("Incorrect request")
                quantity = 1
            else:
                quantity = _to_int(raw_q)
                if quantity is None:
                    return self._err("Incorrect request")
        if quantity < svc.min:
            return self._err(f"Quantity less than minimal {svc.min}")
        if quantity > svc.max:
            return self._err(f"Quantity more than maximal {svc.max}")
        runs: int | None = None
        interval: int | None = None
        if not _blank(params.get("runs")):
            runs = _to_int(params.get("runs"))
            if runs is None or runs < 1:
                return self._err("Incorrect request")
            raw_i = params.get("interval")
            if _blank(raw_i):
                raw_i = params.get("intervals")
            if not _blank(raw_i):
                interval = _to_int(raw_i)
                if interval is None or interval < 0:
                    return self._err("Incorrect request")
        total = quantity * (runs or 1)
        charge = svc.rate * total / 1000
        if charge > self.balance:
            return self._err("Not enough funds on balance")
        self.balance -= charge
        oid = self._next_order
        self._next_order += 1
        partial = "partial" in link.lower()
        self.orders[oid] = _Order(
            id=oid,
            service=svc.id,
            link=link,
            quantity=quantity,
            runs=runs,
            interval=interval,
            total=total,
            charge=charge,
            created=time.monotonic(),
            params=record,
            refill_ok=svc.refill,
            cancel_ok=svc.cancel,
            partial=partial,
            start_base=(oid * 7919) % 9000 + 100,
        )
        if partial:
            self._unsettled.add(oid)
        return SimResponse(200, b'{"order":%d}' % oid)

    # ----------------------------------------------------------------- order state

    def _state(self, o: _Order, now: float) -> tuple[str, int, int]:
        """(status, start_count, remains) of an order now; settles refunds once."""
        if o.forced is not None:
            return o.forced
        ps = self.options.progress_s
        if ps > 0:
            age = now - o.created
            if age < ps / 3:
                return ("Pending", 0, o.total)
            if age < 2 * ps / 3:
                return ("In progress", o.start_base, o.total - o.total // 2)
        if o.partial:
            remains = min(o.total, max(1, o.total // 3))
            self._settle(o, "Partial", remains)
            return ("Partial", o.start_base, remains)
        return ("Completed", o.start_base, 0)

    def _settle(self, o: _Order, status: str, remains: int) -> None:
        if status == "Partial":
            if o.total <= 0:
                target = Decimal(0)
            else:
                target = (o.charge * remains / o.total).quantize(_EIGHT_PLACES)
        elif status in ("Canceled", "Refunded"):
            target = o.charge
        else:
            target = Decimal(0)
        if target > o.refunded:
            self.balance += target - o.refunded
            o.refunded = target
        if status in FINAL_STATUSES:
            self._unsettled.discard(o.id)

    def _settle_all(self) -> None:
        if self._unsettled:
            now = time.monotonic()
            for oid in list(self._unsettled):
                o = self.orders.get(oid)
                if o is None:
                    self._unsettled.discard(oid)
                else:
                    self._state(o, now)

    def _order_status(self, o: _Order, now: float) -> dict[str, Any]:
        status, start, remains = self._state(o, now)
        charge = _money(o.charge - o.refunded, self.places)
        if self.toksmm:
            return {
                "charge": charge,
                "start_count": str(start),
                "status": status,
                "remains": str(remains),
                "currency": self.currency,
            }
        return {
            "status": status,
            "charge": charge,
            "start_count": str(start),
            "remains": str(remains),
            "currency": self.currency,
        }

    def _lookup(self, raw: str) -> _Order | None:
        oid = _to_int(raw)
        return self.orders.get(oid) if oid is not None else None

    # ----------------------------------------------------------------- status

    def _status(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        now = time.monotonic()
        if not _blank(params.get("orders")):
            ids = _split_ids(params["orders"])
            if not ids or len(ids) > MAX_IDS:
                return self._err("Incorrect request")
            if self.toksmm:
                multi: dict[str, Any] = {}
                for raw in ids:
                    o = self._lookup(raw)
                    multi[raw] = (
                        self._order_status(o, now) if o else {"error": "Incorrect order ID"}
                    )
                return _json(multi)
            items: list[dict[str, Any]] = []
            for raw in ids:
                o = self._lookup(raw)
                if o is None:
                    items.append({"order": _json_id(raw), "error": "Incorrect order ID"})
                else:
                    items.append({"order": o.id, **self._order_status(o, now)})
            return _json(items)
        raw_one = params.get("order")
        if _blank(raw_one):
            return self._err("Incorrect request")
        o = self._lookup(str(raw_one))
        if o is None:
            return self._err("Incorrect order ID")
        return _json(self._order_status(o, now))

    # ----------------------------------------------------------------- refill

    def _new_refill(self, o: _Order, now: float) -> int | str:
        """Refill id, or an error message."""
        status = self._state(o, now)[0]
        if not o.refill_ok or status not in ("Completed", "Partial"):
            return "Refill is disabled for this service"
        rid = self._next_refill
        self._next_refill += 1
        self.refills[rid] = _Refill(rid, o.id, now)
        return rid

    def _refill(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        now = time.monotonic()
        if not _blank(params.get("orders")):
            ids = _split_ids(params["orders"])
            if not ids or len(ids) > MAX_IDS:
                return self._err("Incorrect request")
            items: list[dict[str, Any]] = []
            for raw in ids:
                o = self._lookup(raw)
                if o is None:
                    items.append(
                        {"order": _json_id(raw), "refill": {"error": "Incorrect order ID"}}
                    )
                    continue
                result = self._new_refill(o, now)
                items.append(
                    {
                        "order": o.id,
                        "refill": result if isinstance(result, int) else {"error": result},
                    }
                )
            return _json(items)
        raw_one = params.get("order")
        if _blank(raw_one):
            return self._err("Incorrect request")
        o = self._lookup(str(raw_one))
        if o is None:
            return self._err("Incorrect order ID")
        result = self._new_refill(o, now)
        if isinstance(result, str):
            return self._err(result)
        return _json({"refill": str(result) if self.toksmm else result})

    def _refill_state(self, r: _Refill, now: float) -> str:
        ps = self.options.progress_s
        return "Pending" if ps > 0 and now - r.created < ps / 2 else "Completed"

    def _refill_status(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        now = time.monotonic()
        if not _blank(params.get("refills")):
            ids = _split_ids(params["refills"])
            if not ids or len(ids) > MAX_IDS:
                return self._err("Incorrect request")
            items: list[dict[str, Any]] = []
            for raw in ids:
                rid = _to_int(raw)
                r = self.refills.get(rid) if rid is not None else None
                if r is None:
                    items.append({"refill": _json_id(raw), "status": {"error": "Refill not found"}})
                else:
                    items.append({"refill": r.id, "status": self._refill_state(r, now)})
            return _json(items)
        raw_one = params.get("refill")
        if _blank(raw_one):
            return self._err("Incorrect request")
        rid = _to_int(raw_one)
        r = self.refills.get(rid) if rid is not None else None
        if r is None:
            return self._err("Refill not found")
        return _json({"status": self._refill_state(r, now)})

    # ----------------------------------------------------------------- cancel

    def _try_cancel(self, o: _Order, now: float) -> str | None:
        """Cancel the order; ``None`` on success, else why not."""
        if not o.cancel_ok:
            return "Cancel is disabled for this service"
        status, start, _remains = self._state(o, now)
        if status in FINAL_STATUSES:
            return "Order cannot be canceled"
        o.forced = ("Canceled", start, o.total)
        self._settle(o, "Canceled", o.total)
        return None

    def _cancel(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        now = time.monotonic()
        raw_ids = params.get("orders")
        if _blank(raw_ids):
            raw_ids = params.get("order")
        if _blank(raw_ids):
            return self._err("Incorrect request")
        ids = _split_ids(raw_ids)
        if not ids or len(ids) > MAX_IDS:
            return self._err("Incorrect request")
        items: list[dict[str, Any]] = []
        for raw in ids:
            o = self._lookup(raw)
            if o is None:
                if self.toksmm:
                    items.append(
                        {"order": _json_id(raw), "cancel": {"error": "Incorrect order ID"}}
                    )
                else:
                    items.append({"order": _json_id(raw), "error": "Incorrect order ID"})
                continue
            why = self._try_cancel(o, now)
            if self.toksmm:
                items.append({"order": o.id, "cancel": 1 if why is None else {"error": why}})
            else:
                items.append({"order": o.id, "canceled": why is None})
        return _json(items)

    # ----------------------------------------------------------------- balance

    def _balance(self, params: dict[str, Any], record: dict[str, Any]) -> SimResponse:
        self._settle_all()
        return SimResponse(
            200, _ENCODE({"balance": _money(self.balance, self.places), "currency": self.currency})
        )

    # ----------------------------------------------------------------- control API

    def _order_view(self, o: _Order, now: float) -> dict[str, Any]:
        status, start, remains = self._state(o, now)
        return {
            "order": o.id,
            "service": o.service,
            "link": o.link,
            "quantity": o.quantity,
            "runs": o.runs,
            "interval": o.interval,
            "charge": _money(o.charge, 5),
            "status": status,
            "start_count": start,
            "remains": remains,
            "refunded": _money(o.refunded, 5),
            "params": o.params,
        }

    def _control(self, method: str, sub: str, query: str, body: bytes) -> SimResponse:
        if sub == "health":
            return _json({"ok": True})
        if method == "GET":
            return self._control_get(sub, query)
        if method != "POST":
            return _NOT_FOUND
        data: Any = _DECODE(body) if body.strip() else {}
        if sub == "fault":
            if not isinstance(data, dict):
                raise TypeError("expected an object")
            fault = data.get("fault")
            if fault is not None:
                fault = str(fault)
                if fault not in FAULTS:
                    raise ValueError(f"unknown fault {fault!r}")
            rate = data.get("rate")
            self.fault = fault
            self.fault_rate = float(rate) if rate is not None else (1.0 if fault else 0.0)
            return _json({"ok": True})
        if sub == "latency":
            ms = data.get("ms", 0) if isinstance(data, dict) else data
            self.latency_ms = max(0.0, float(ms or 0))
            return _json({"ok": True})
        if sub == "balance":
            value = data.get("balance") if isinstance(data, dict) else data
            self.balance = Decimal(str(value))
            return _json({"ok": True})
        if sub == "catalog":
            services = data.get("services") if isinstance(data, dict) else data
            if not isinstance(services, list):
                raise TypeError('expected {"services": [...]}')
            self.set_catalog(services)
            return _json({"ok": True})
        if sub == "reject":
            if not isinstance(data, dict):
                raise TypeError("expected an object")
            error = data.get("error")
            count = _to_int(data.get("count", 1))
            if error is None or count == 0:
                self.reject_error, self.reject_count = None, 0
            else:
                self.reject_error = str(error)
                self.reject_count = count if count is not None else 1
            return _json({"ok": True})
        if sub == "reset":
            self.reset()
            return _json({"ok": True})
        if sub.startswith("orders/"):
            return self._force(sub[7:], data)
        return _NOT_FOUND

    def _control_get(self, sub: str, query: str) -> SimResponse:
        q = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        if sub == "requests":
            action = q.get("action")
            if action:
                return _json({"requests": [r for r in self.requests if r["action"] == action]})
            return _json({"requests": list(self.requests)})
        if sub == "orders":
            self._settle_all()
            now = time.monotonic()
            return _json({"orders": [self._order_view(o, now) for o in self.orders.values()]})
        if sub.startswith("orders/"):
            o = self._lookup(sub[7:])
            if o is None:
                return _NOT_FOUND
            return _json(self._order_view(o, time.monotonic()))
        if sub == "stats":
            return _json({"actions": dict(self.stats), "total": self.total})
        if sub == "balance":
            self._settle_all()
            return _json({"balance": _money(self.balance, 5), "currency": self.currency})
        return _NOT_FOUND

    def _force(self, raw_id: str, data: Any) -> SimResponse:
        o = self._lookup(raw_id)
        if o is None:
            return _NOT_FOUND
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise TypeError('expected {"status": ...}')
        status = data["status"]
        if status == "Pending":
            default_remains, default_start = o.total, 0
        elif status == "Completed":
            default_remains, default_start = 0, o.start_base
        elif status == "Partial":
            default_remains, default_start = min(o.total, max(1, o.total // 2)), o.start_base
        elif status in ("Canceled", "Refunded"):
            default_remains, default_start = o.total, o.start_base
        else:
            default_remains, default_start = o.total - o.total // 2, o.start_base
        remains = _to_int(data.get("remains"))
        start = _to_int(data.get("start_count"))
        remains = default_remains if remains is None else max(0, min(remains, o.total))
        start = default_start if start is None else start
        o.forced = (status, start, remains)
        self._settle(o, status, remains)
        self._unsettled.discard(o.id)
        return _json({"ok": True})


# --------------------------------------------------------------------------- HTTP layer

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
_HEADS: dict[tuple[int, str], bytes] = {}
_KEEP = b"\r\nConnection: keep-alive\r\n\r\n"
_CLOSE = b"\r\nConnection: close\r\n\r\n"


def _render(status: int, content_type: str, body: bytes, keep_alive: bool) -> bytes:
    head = _HEADS.get((status, content_type))
    if head is None:
        reason = _REASONS.get(status, "Unknown")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nServer: smm-simulator\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: "
        ).encode("latin-1")
        _HEADS[(status, content_type)] = head
    return b"".join((head, b"%d" % len(body), _KEEP if keep_alive else _CLOSE, body))


class _HttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer via the Simulator."""

    __slots__ = (
        "body",
        "body_len",
        "closed",
        "conns",
        "headers",
        "parser",
        "queue",
        "sim",
        "task",
        "transport",
        "url",
    )

    def __init__(self, sim: Simulator, conns: set[_HttpProtocol]) -> None:
        self.sim = sim
        self.conns = conns
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_len = 0
        self.queue: deque[tuple[SimResponse, bool]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conns.discard(self)
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # A bug in the simulator: answer 500 and let asyncio log the traceback.
            self._fail(500)
            raise
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(400)

    def _fail(self, status: int) -> None:
        if self.transport is not None and not self.closed:
            body = _ENCODE({"error": _REASONS.get(status, "Error")})
            self.transport.write(_render(status, "application/json", body, False))
            self.transport.close()
        self.closed = True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_len = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        expect = self.headers.get("expect")
        if expect is not None and expect.lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        self.body_len += len(body)
        if self.body_len > MAX_BODY:
            self._fail(413)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        resp = self.sim.handle(self.url.decode("latin-1"), method, self.headers, body)
        if self.task is None and not resp.delay and resp.fault is None:
            self._write(resp, keep_alive)
            return
        self.queue.append((resp, keep_alive))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    def _write(self, resp: SimResponse, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(_render(resp.status, resp.content_type, resp.body, keep_alive))
        if not keep_alive:
            transport.close()
            self.closed = True

    async def _drain(self) -> None:
        try:
            while self.queue and not self.closed:
                resp, keep_alive = self.queue.popleft()
                if resp.delay:
                    await asyncio.sleep(resp.delay)
                if resp.fault == "hang":
                    await asyncio.sleep(HANG_SECONDS)
                    if self.transport is not None:
                        self.transport.abort()
                    return
                if resp.fault == "drop":
                    if self.transport is not None:
                        self.transport.abort()
                    self.closed = True
                    return
                self._write(resp, keep_alive)
        except asyncio.CancelledError:
            pass
        finally:
            self.task = None


async def _start(
    options: SimOptions, host: str, port: int
) -> tuple[asyncio.AbstractServer, set[_HttpProtocol]]:
    sim = Simulator(options)
    conns: set[_HttpProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpProtocol(sim, conns), host, port, reuse_address=True, backlog=1024
    )
    return server, conns


async def start_server(options: SimOptions, host: str, port: int) -> asyncio.AbstractServer:
    """Start a simulator on the running loop; ``port=0`` picks a free port."""
    server, _ = await _start(options, host, port)
    return server


async def _serve(options: SimOptions, host: str, port: int) -> None:
    server, conns = await _start(options, host, port)
    sockets = getattr(server, "sockets", None) or []
    if sockets:
        port = sockets[0].getsockname()[1]
    print(f"simulator ({options.dialect}) listening on http://{host}:{port}/api/v2", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-unix
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for conn in list(conns):
        conn.close()
    await server.wait_closed()


def serve(options: SimOptions, host: str = "127.0.0.1", port: int = 9001) -> None:
    """Run a simulator until SIGINT/SIGTERM (blocking)."""
    Simulator(options)  # validate before binding
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    else:
        uvloop.install()
    asyncio.run(_serve(options, host, port))


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: ``python -m gateway.simulator --port 9001``."""
    parser = argparse.ArgumentParser(
        prog="smm-simulator", description="Simulated SMM API v2 provider."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--dialect", choices=DIALECTS, default="toksmm")
    parser.add_argument("--catalog", metavar="FILE", help="JSON list of services")
    parser.add_argument("--balance", type=Decimal, default=Decimal(1000))
    parser.add_argument("--currency", default="USD")
    parser.add_argument("--key", default=None, help="required API key (default: any)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault", choices=FAULTS, default=None)
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        help="fraction of requests hit by --fault (default 1.0 with --fault, else 0)",
    )
    parser.add_argument("--order-start", type=int, default=1)
    parser.add_argument("--progress-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    fault_rate = args.fault_rate
    if fault_rate is None:
        fault_rate = 1.0 if args.fault else 0.0
    options = SimOptions(
        dialect=args.dialect,
        catalog=load_catalog(args.catalog) if args.catalog else None,
        balance=args.balance,
        currency=args.currency,
        key=args.key,
        latency_ms=args.latency_ms,
        fault=args.fault,
        fault_rate=fault_rate,
        order_start=args.order_start,
        progress_s=args.progress_s,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(options, args.host, args.port)


if __name__ == "__main__":
    main()
