"""The simulated account: its balance, orders and refills, and how they move on.

Orders progress lazily on the simulator's clock, computed whenever one is looked
at, along the :class:`~gateway.sim.behaviour.Fate` drawn when they were placed:
``Pending`` until ``start_delay_s`` (default: the first third of ``progress_s``),
``In progress`` for ``complete_s`` (default: the second third, half delivered),
then final: ``Completed``, or ``Partial`` (a ``partial_rate`` share of orders, and
links containing ``partial``); a stalled order stays ``Pending``. A status forced
through the control API, or a cancel, pins the order instead.

What a final status gives back is refunded to the balance once, when the order is
first seen in it (``settle``): a Partial returns the charge of what remains, a
Canceled or Refunded order all of it. Money is :class:`~decimal.Decimal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.models import FINAL_STATUSES
from gateway.sim.behaviour import (
    CANCEL_REFUSED,
    DEFAULT,
    REFILL_REFUSED,
    TICK,
    Behaviour,
    Fate,
    SimClock,
    decide,
)
from gateway.sim.catalog import Service
from gateway.sim.codec import EIGHT_PLACES, to_int

_REFUNDED_IN_FULL = ("Canceled", "Refunded")
_REFILLABLE = ("Completed", "Partial")

# (status, start_count, remains)
Progress = tuple[str, int, int]


@dataclass(slots=True)
class Order:
    """One order as placed, and what has been refunded on it so far."""

    id: int
    service: int
    link: str
    quantity: int
    runs: int | None
    interval: int | None
    total: int
    charge: Decimal
    created: float  # on the simulator's clock
    params: dict[str, Any]
    refill_ok: bool
    cancel_ok: bool
    behaviour: Behaviour  # its service's, when it was placed
    fate: Fate
    start_base: int
    refunded: Decimal = Decimal(0)
    forced: Progress | None = None


@dataclass(slots=True)
class Refill:
    """One refill request on an order."""

    id: int
    order: int
    created: float  # on the simulator's clock
    rejected: bool = False  # ends Rejected rather than Completed


class Book:
    """Balance, orders and refills of the one account a simulator serves."""

    def __init__(
        self, balance: Decimal, order_start: int, progress_s: float, seed: int = 0
    ) -> None:
        self.balance = balance
        self.orders: dict[int, Order] = {}
        self.refills: dict[int, Refill] = {}
        self.progress_s = progress_s
        self.seed = seed
        self.clock = SimClock()
        self._next_order = order_start
        self._next_refill = order_start
        # Partial orders not yet refunded: reading the balance settles them first,
        # so it is the same whether or not their status was asked for.
        self._unsettled: set[int] = set()

    def lookup(self, raw: str) -> Order | None:
        """The order with this id as sent, if any."""
        oid = to_int(raw)
        return self.orders.get(oid) if oid is not None else None

    def lookup_refill(self, raw: Any) -> Refill | None:
        """The refill with this id as sent, if any."""
        rid = to_int(raw)
        return self.refills.get(rid) if rid is not None else None

    def place(
        self,
        svc: Service,
        link: str,
        counts: tuple[int, int | None, int | None],
        params: dict[str, Any],
        behaviour: Behaviour = DEFAULT,
    ) -> Order | None:
        """Charge and record an order of ``(quantity, runs, interval)``; ``None`` if unpaid."""
        quantity, runs, interval = counts
        total = quantity * (runs or 1)
        charge = svc.rate * total / 1000
        if charge > self.balance:
            return None
        self.balance -= charge
        oid = self._next_order
        self._next_order += 1
        now = self.clock.now()
        fate = decide(
            behaviour, self.seed, oid, now, self.progress_s, total, "partial" in link.lower()
        )
        order = Order(
            id=oid,
            service=svc.id,
            link=link,
            quantity=quantity,
            runs=runs,
            interval=interval,
            total=total,
            charge=charge,
            created=now,
            params=params,
            refill_ok=svc.refill,
            cancel_ok=svc.cancel,
            behaviour=behaviour,
            fate=fate,
            # a stable, made-up follower count the order starts from
            start_base=(oid * 7919) % 9000 + 100,
        )
        self.orders[oid] = order
        if fate.kind == "partial":
            self._unsettled.add(oid)
        return order

    def progress(self, o: Order, now: float) -> Progress:
        """(status, start_count, remains) of an order now; settles refunds once."""
        if o.forced is not None:
            return o.forced
        fate = o.fate
        now += TICK  # a moment reached by advancing the clock exactly counts as reached
        if now < fate.start_at:
            return ("Pending", 0, o.total)
        if now < fate.end_at:  # half of what it will deliver, delivered
            return ("In progress", o.start_base, o.total - (o.total - fate.remains) // 2)
        if fate.kind == "partial":
            self.settle(o, "Partial", fate.remains)
            return ("Partial", o.start_base, fate.remains)
        return ("Completed", o.start_base, 0)

    def settle(self, o: Order, status: str, remains: int) -> None:
        """Refund what ``status`` gives back, minus what was refunded already."""
        if status == "Partial":
            if o.total <= 0:
                target = Decimal(0)
            else:
                target = (o.charge * remains / o.total).quantize(EIGHT_PLACES)
        elif status in _REFUNDED_IN_FULL:
            target = o.charge
        else:
            target = Decimal(0)
        if target > o.refunded:
            self.balance += target - o.refunded
            o.refunded = target
        if status in FINAL_STATUSES:
            self._unsettled.discard(o.id)

    def settle_all(self) -> None:
        """Settle every order that may have reached Partial unseen."""
        if self._unsettled:
            now = self.clock.now()
            for oid in list(self._unsettled):
                o = self.orders.get(oid)
                if o is None:
                    self._unsettled.discard(oid)
                else:
                    self.progress(o, now)

    def new_refill(self, o: Order, now: float) -> int | str:
        """Refill id, or an error message."""
        status = self.progress(o, now)[0]
        if not o.refill_ok or status not in _REFILLABLE:
            return REFILL_REFUSED
        if o.behaviour.refuse_refill is not None:
            return o.behaviour.refuse_refill
        rid = self._next_refill
        self._next_refill += 1
        self.refills[rid] = Refill(rid, o.id, now, o.behaviour.reject_refill)
        return rid

    def refill_status(self, r: Refill, now: float) -> str:
        """Refills end (``Completed``, or ``Rejected``) after half of ``progress_s``."""
        ps = self.progress_s
        if ps > 0 and now + TICK - r.created < ps / 2:
            return "Pending"
        return "Rejected" if r.rejected else "Completed"

    def cancel(self, o: Order, now: float) -> str | None:
        """Cancel the order; ``None`` on success, else why not.

        An order not started yet ends ``Canceled`` with nothing delivered; one under
        way ends ``Partial`` with what it delivered so far (``Canceled`` if nothing).
        """
        if not o.cancel_ok:
            return CANCEL_REFUSED
        if o.behaviour.refuse_cancel is not None:
            return o.behaviour.refuse_cancel
        status, start, remains = self.progress(o, now)
        if status in FINAL_STATUSES or (status != "Pending" and remains <= 0):
            return "Order cannot be canceled"
        if status == "Pending" or remains >= o.total:
            o.forced = ("Canceled", start, o.total)
            self.settle(o, "Canceled", o.total)
        else:
            o.forced = ("Partial", start, remains)
            self.settle(o, "Partial", remains)
        return None

    def force(self, o: Order, status: str, start: int | None, remains: int | None) -> None:
        """Pin an order's status; start count and remains default to what suits it."""
        if status == "Pending":
            default_remains, default_start = o.total, 0
        elif status == "Completed":
            default_remains, default_start = 0, o.start_base
        elif status == "Partial":
            default_remains, default_start = min(o.total, max(1, o.total // 2)), o.start_base
        elif status in _REFUNDED_IN_FULL:
            default_remains, default_start = o.total, o.start_base
        else:
            default_remains, default_start = o.total - o.total // 2, o.start_base
        remains = default_remains if remains is None else max(0, min(remains, o.total))
        start = default_start if start is None else start
        o.forced = (status, start, remains)
        self.settle(o, status, remains)
        self._unsettled.discard(o.id)
