"""A programmable in-memory SMM API v2 provider, for the unit tier.

`FakeProvider.handle` is an `httpx.MockTransport` handler: the gateway's real
provider client (retries, error mapping, dialect reader) runs over it, only the
sockets are gone. `transport_for(providers)` is the `transport=` factory that
`open_resources` and `create_app` take.

What a test can program, per action:

- `fail(action, *outcomes)`: the next calls answer these outcomes, in turn;
- `fail_always(action, outcome)`: every call answers it, until `None` is set;
- `hold(action)`: the next call waits until the test releases it;
- `set_status(order, status, remains=...)`: what `status` says of an order;
- `on_add`: a callback that sees each `add`'s fields before it is answered.

Outcomes: `Reject("Not enough funds")` (HTTP 200 `{"error": ...}`),
`HttpStatus(500)`, `Unreachable()` (raises `httpx.ConnectError`: the request
never left). `calls` counts the calls per action, `requests` keeps their fields.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec

from gateway.config import ProviderSettings
from gateway.upstream.transport import HttpxTransport, Transport

INCORRECT_ORDER = "Incorrect order ID"


@dataclass(frozen=True, slots=True)
class Reject:
    """A definite refusal: HTTP 200 `{"error": message}`."""

    message: str


@dataclass(frozen=True, slots=True)
class HttpStatus:
    """An HTTP error page (a 5xx to a write is ambiguous, to a read retried)."""

    status: int = 500
    body: bytes = b"<html><body>Internal Server Error</body></html>"


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The connection is never made (`httpx.ConnectError`)."""


Outcome = Reject | HttpStatus | Unreachable


@dataclass(slots=True)
class UpstreamOrder:
    service: str
    link: str
    quantity: int
    charge: Decimal
    status: str = "Pending"
    remains: int | None = None
    start_count: int = 0


@dataclass(slots=True)
class Hold:
    """One call held: `entered` is set when it arrives, it answers after `release`."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _json(obj: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=msgspec.json.encode(obj),
                          headers={"Content-Type": "application/json"})


def _ids(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _as_number(text: str) -> int | str:
    return int(text) if text.isdigit() else text


class FakeProvider:
    def __init__(self, name: str, services: list[dict[str, Any]], *, key: str | None = None,
                 balance: str = "100.00", currency: str = "USD", first_order: int = 1,
                 first_refill: int = 1) -> None:
        self.name = name
        self.services = services
        self.key = key  # None: any key is accepted
        self.balance = balance
        self.currency = currency
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, str]] = []
        self.orders: dict[str, UpstreamOrder] = {}
        self.refills: dict[str, tuple[str, str]] = {}  # refill id -> (order id, status)
        self.canceled: list[str] = []
        self.on_add: Callable[[Mapping[str, str]], None] | None = None
        self._next_order = first_order
        self._next_refill = first_refill
        self._queued: dict[str, deque[Outcome]] = defaultdict(deque)
        self._always: dict[str, Outcome] = {}
        self._holds: dict[str, Hold] = {}

    # --- programming ---------------------------------------------------------

    def fail(self, action: str, *outcomes: Outcome) -> None:
        """The next calls of `action` answer these outcomes, one each, in order."""
        self._queued[action].extend(outcomes)

    def fail_always(self, action: str, outcome: Outcome | None) -> None:
        """Every call of `action` answers `outcome` (None: behave again)."""
        if outcome is None:
            self._always.pop(action, None)
        else:
            self._always[action] = outcome

    def hold(self, action: str) -> Hold:
        """The next call of `action` waits for `release` (in-loop tests only)."""
        hold = Hold()
        self._holds[action] = hold
        return hold

    def set_status(self, order: str, status: str, remains: int | None = None,
                   start_count: int | None = None) -> None:
        o = self.orders[order]
        o.status = status
        if remains is not None:
            o.remains = remains
        if start_count is not None:
            o.start_count = start_count

    @property
    def last_order(self) -> str:
        return next(reversed(self.orders))

    # --- the handler ---------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        fields = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        action = fields.get("action", "")
        self.calls[action] += 1
        self.requests.append(fields)
        hold = self._holds.pop(action, None)
        if hold is not None:
            hold.entered.set()
            await hold.release.wait()
        outcome = self._queued[action].popleft() if self._queued[action] else \
            self._always.get(action)
        if isinstance(outcome, Unreachable):
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(outcome, HttpStatus):
            return httpx.Response(outcome.status, content=outcome.body,
                                  headers={"Content-Type": "text/html"})
        if isinstance(outcome, Reject):
            return _json({"error": outcome.message})
        if self.key is not None and fields.get("key") != self.key:
            return _json({"error": "Invalid API key"})
        serve = getattr(self, "_" + action, None)
        if serve is None:
            return _json({"error": "Incorrect request"})
        answer: httpx.Response = serve(fields)
        return answer

    # --- actions -------------------------------------------------------------

    def _services(self, fields: dict[str, str]) -> httpx.Response:
        return _json(self.services)

    def _balance(self, fields: dict[str, str]) -> httpx.Response:
        return _json({"balance": self.balance, "currency": self.currency})

    def _add(self, fields: dict[str, str]) -> httpx.Response:
        if self.on_add is not None:
            self.on_add(fields)
        service = next((s for s in self.services if str(s["service"]) == fields.get("service")),
                       None)
        if service is None:
            return _json({"error": "Incorrect service ID"})
        quantity = int(fields.get("quantity", "0")) * int(fields.get("runs") or 1)
        oid = str(self._next_order)
        self._next_order += 1
        self.orders[oid] = UpstreamOrder(
            service=str(service["service"]), link=fields.get("link", ""), quantity=quantity,
            charge=Decimal(str(service["rate"])) * quantity / 1000, remains=quantity)
        return _json({"order": int(oid)})

    def _status_of(self, oid: str) -> dict[str, Any]:
        o = self.orders.get(oid)
        if o is None:
            return {"error": INCORRECT_ORDER}
        return {"charge": str(o.charge), "start_count": str(o.start_count),
                "status": o.status, "remains": str(o.remains), "currency": self.currency}

    def _status(self, fields: dict[str, str]) -> httpx.Response:
        if "orders" in fields:
            return _json({oid: self._status_of(oid) for oid in _ids(fields["orders"])})
        return _json(self._status_of(fields.get("order", "")))

    def _refill_of(self, oid: str) -> int | dict[str, str]:
        if oid not in self.orders:
            return {"error": INCORRECT_ORDER}
        rid = str(self._next_refill)
        self._next_refill += 1
        self.refills[rid] = (oid, "Pending")
        return int(rid)

    def _refill(self, fields: dict[str, str]) -> httpx.Response:
        if "orders" in fields:
            return _json([{"order": _as_number(oid), "refill": self._refill_of(oid)}
                          for oid in _ids(fields["orders"])])
        result = self._refill_of(fields.get("order", ""))
        return _json(result if isinstance(result, dict) else {"refill": result})

    def _refill_status_of(self, rid: str) -> str | dict[str, str]:
        return self.refills[rid][1] if rid in self.refills else {"error": "Refill not found"}

    def _refill_status(self, fields: dict[str, str]) -> httpx.Response:
        if "refills" in fields:
            return _json([{"refill": _as_number(rid), "status": self._refill_status_of(rid)}
                          for rid in _ids(fields["refills"])])
        result = self._refill_status_of(fields.get("refill", ""))
        return _json(result if isinstance(result, dict) else {"status": result})

    def _cancel_of(self, oid: str) -> int | dict[str, str]:
        o = self.orders.get(oid)
        if o is None:
            return {"error": INCORRECT_ORDER}
        o.status = "Canceled"
        self.canceled.append(oid)
        return 1

    def _cancel(self, fields: dict[str, str]) -> httpx.Response:
        ids = _ids(fields.get("orders", "")) or _ids(fields.get("order", ""))
        return _json([{"order": _as_number(oid), "cancel": self._cancel_of(oid)}
                      for oid in ids])


def transport_for(providers: Mapping[str, FakeProvider],
                  ) -> Callable[[ProviderSettings], Transport]:
    """The `transport=` factory: each configured provider served by its fake."""
    def make(p: ProviderSettings) -> Transport:
        return HttpxTransport(p.url, p.timeout_s, p.max_concurrency,
                              mock=providers[p.name].handle)
    return make
