"""How a simulated provider misbehaves, per service, and the clock it does it by.

Behaviour fields (all optional; unset means today's well-behaved provider):

- ``start_delay_s``: seconds from the add to ``In progress`` (default ``progress_s / 3``);
- ``complete_s``: seconds from ``In progress`` to the final status (default ``progress_s / 3``);
- ``stall_rate`` (0..1): the share of orders that never start: ``Pending`` forever,
  ``start_count`` 0, nothing delivered;
- ``partial_rate`` (0..1): the share of all orders that end ``Partial``, taken from
  those that do not stall (``stall_rate + partial_rate <= 1`` gives both exactly);
- ``delivered_share`` (0..1): what a ``Partial`` order delivers,
  ``remains = quantity x (1 - share)`` (default: a third remains);
- ``refuse_refill``: ``true`` (or an error text) answers every refill with
  ``Refill is disabled for this service`` (or that text), even where the service
  advertises refills; ``reject_refill: true`` accepts refills, which end ``Rejected``;
- ``refuse_cancel``: ``true`` (or an error text) answers every cancel with
  ``Cancel is disabled for this service`` (or that text).

They are read from catalog entries and set at run time through ``/_sim/behaviour``,
in layers: the catalog entry, then the control API's setting for every service,
then its setting for that service. An order lives by the behaviour its service had
when it was placed. Its fate is drawn from a hash of the simulator's seed and the
order id, so a run is reproducible and the shares over many orders match the rates.

:class:`SimClock` is the time orders and refills progress by: the monotonic clock,
moved forward on demand (``/_sim/clock``) and optionally frozen, so tests advance
hours without sleeping.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, NamedTuple

FIELDS = (
    "start_delay_s",
    "complete_s",
    "partial_rate",
    "delivered_share",
    "stall_rate",
    "refuse_refill",
    "reject_refill",
    "refuse_cancel",
)
TICK = 1e-6  # seconds: float error in clock sums stays below it
REFILL_REFUSED = "Refill is disabled for this service"
CANCEL_REFUSED = "Cancel is disabled for this service"
_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("", "0", "false", "no", "off", "n")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One service's behaviour, every layer applied; ``None`` times follow ``progress_s``."""

    start_delay_s: float | None = None
    complete_s: float | None = None
    partial_rate: float = 0.0
    delivered_share: float | None = None  # None: a third of the quantity remains
    stall_rate: float = 0.0
    refuse_refill: str | None = None  # the error a refill gets; None: refills are taken
    reject_refill: bool = False
    refuse_cancel: str | None = None  # the error a cancel gets; None: cancels are taken

    def view(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = Behaviour()


class Fate(NamedTuple):
    """What becomes of one order, decided when it is placed (times on the sim clock)."""

    kind: str  # "complete" | "partial" | "stall"
    start_at: float  # In progress from here (inf: never)
    end_at: float  # final from here (inf: never)
    remains: int  # what remains once final


def draw(seed: int, order_id: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the order id."""
    digest = hashlib.blake2b(f"{seed}:{order_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def decide(
    b: Behaviour,
    seed: int,
    order_id: int,
    created: float,
    progress_s: float,
    total: int,
    partial_link: bool,
) -> Fate:
    """The fate of an order placed at ``created`` (a link containing ``partial`` always
    ends Partial, as it did before behaviours existed)."""
    u = draw(seed, order_id) if b.stall_rate > 0 or b.partial_rate > 0 else 1.0
    if u < b.stall_rate:
        return Fate("stall", math.inf, math.inf, total)
    ps = max(0.0, progress_s)
    start_at = created + (ps / 3 if b.start_delay_s is None else b.start_delay_s)
    end_at = start_at + (ps / 3 if b.complete_s is None else b.complete_s)
    if partial_link or u < b.stall_rate + b.partial_rate:
        if b.delivered_share is None:
            remains = min(total, max(1, total // 3))
        else:
            remains = max(0, min(total, total - round(total * b.delivered_share)))
        return Fate("partial", start_at, end_at, remains)
    return Fate("complete", start_at, end_at, 0)


# --------------------------------------------------------------------------- parsing


def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, int | float | Decimal | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ValueError(f"{name}: expected {what}, got {value!r}")


def _seconds(name: str, value: Any) -> float:
    seconds = _number(name, value, "seconds (a number >= 0)")
    if seconds < 0:
        raise ValueError(f"{name}: expected seconds >= 0, got {value!r}")
    return seconds


def _share(name: str, value: Any) -> float:
    share = _number(name, value, "a share between 0 and 1")
    if not 0 <= share <= 1:
        raise ValueError(f"{name}: expected a share between 0 and 1, got {value!r}")
    return share


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _refusal(name: str, value: Any, message: str) -> str | None:
    """``true`` refuses with the usual message, a text with that text; ``false`` takes."""
    if isinstance(value, str) and value.strip().lower() not in _TRUE + _FALSE:
        return value.strip()
    return message if _flag(name, value) else None


def parse_value(name: str, value: Any) -> Any:
    """One field as a :class:`Behaviour` holds it; raises ``ValueError``/``TypeError``."""
    if name in ("start_delay_s", "complete_s"):
        return _seconds(name, value)
    if name in ("partial_rate", "delivered_share", "stall_rate"):
        return _share(name, value)
    if name == "reject_refill":
        return _flag(name, value)
    if name == "refuse_refill":
        return _refusal(name, value, REFILL_REFUSED)
    if name == "refuse_cancel":
        return _refusal(name, value, CANCEL_REFUSED)
    raise ValueError(f"unknown behaviour field {name!r} (use one of {', '.join(FIELDS)})")


def catalog_layer(raw: Mapping[str, Any], sid: int) -> dict[str, Any]:
    """The behaviour fields of one catalog entry (other keys are the service's own)."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is not None:
            try:
                out[name] = parse_value(name, value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"service {sid}: {exc}") from exc
    return out


def merge(layer: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply control changes to a layer: a value sets a field, ``null`` unsets it."""
    for name, value in changes.items():
        if value is None:
            if name not in FIELDS:
                raise ValueError(f"unknown behaviour field {name!r}")
            layer.pop(name, None)
        else:
            layer[name] = parse_value(name, value)


class Behaviours:
    """The control API's layers over the catalog's, and each service's result."""

    def __init__(self) -> None:
        self.every: dict[str, Any] = {}  # set for every service
        self.services: dict[int, dict[str, Any]] = {}  # set for one service
        self._cache: dict[int, Behaviour] = {}

    def of(self, sid: int, from_catalog: Mapping[str, Any]) -> Behaviour:
        """The behaviour of service ``sid`` whose catalog entry gives ``from_catalog``."""
        found = self._cache.get(sid)
        if found is None:
            found = Behaviour(**{**from_catalog, **self.every, **self.services.get(sid, {})})
            self._cache[sid] = found
        return found

    def forget(self) -> None:
        """Drop the results, after the catalog or a layer changed."""
        self._cache.clear()

    def change(self, service: Any, fields: Mapping[str, Any]) -> None:
        """Set ``fields`` (``null`` unsets one) for ``service``: an id, a list of ids,
        or ``None`` for every service. Checked whole first: a bad field changes nothing."""
        ids = None if service is None else _service_ids(service)
        for name, value in fields.items():
            if value is not None:
                parse_value(name, value)
            elif name not in FIELDS:
                raise ValueError(f"unknown behaviour field {name!r}")
        if ids is None:
            merge(self.every, fields)
        for sid in ids or ():
            layer = self.services.setdefault(sid, {})
            merge(layer, fields)
            if not layer:
                del self.services[sid]
        self.forget()

    def reset(self, service: Any = None) -> None:
        """Back to the catalog: one service's (or several) control settings, or all of them."""
        if service is None:
            self.every.clear()
            self.services.clear()
        else:
            for sid in _service_ids(service):
                self.services.pop(sid, None)
        self.forget()

    def view(self) -> dict[str, Any]:
        return {
            "every": dict(self.every),
            "per_service": {str(sid): dict(layer) for sid, layer in self.services.items()},
        }


def _service_ids(raw: Any) -> list[int]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(f"service: expected an id, got {item!r}")
        try:
            out.append(int(str(item).strip()))
        except ValueError as exc:
            raise ValueError(f"service: expected an id, got {item!r}") from exc
    return out


# --------------------------------------------------------------------------- clock


class SimClock:
    """Monotonic seconds, plus however far the control API has moved them on."""

    def __init__(self) -> None:
        self.advanced = 0.0  # seconds added through the control API
        self._paused = 0.0  # real seconds that passed while frozen
        self._frozen_at: float | None = None
        self._origin = time.monotonic()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now(self) -> float:
        base = self._frozen_at if self._frozen_at is not None else time.monotonic()
        return base - self._paused + self.advanced

    def advance(self, seconds: float) -> None:
        self.advanced += seconds

    def freeze(self, frozen: bool) -> None:
        """Stop real time moving the clock (``advance`` still does), or let it run again
        from where it stood."""
        if frozen and self._frozen_at is None:
            self._frozen_at = time.monotonic()
        elif not frozen and self._frozen_at is not None:
            self._paused += time.monotonic() - self._frozen_at
            self._frozen_at = None

    def view(self) -> dict[str, Any]:
        return {
            "now_s": round(self.now() - self._origin, 6),
            "advanced_s": round(self.advanced, 6),
            "frozen": self.frozen,
        }
