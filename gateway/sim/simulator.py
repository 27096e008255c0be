"""One simulated provider in memory: its settings, account and request log, no I/O.

:meth:`Simulator.handle` takes one HTTP request and sends ``/api/v2`` to the provider
API (:mod:`gateway.sim.api`) and ``/_sim/...`` to the control API
(:mod:`gateway.sim.control`); the HTTP server only carries the answer out.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from gateway.sim import api, control
from gateway.sim.behaviour import Behaviour, Behaviours
from gateway.sim.catalog import DEFAULT_CATALOG, Service, normalise_catalog, service_object
from gateway.sim.codec import ENCODE, NOT_FOUND, SimResponse, json_response
from gateway.sim.options import DIALECTS, FAULTS, SimOptions, check_retry_after
from gateway.sim.state import Book

REQUEST_LOG_CAP = 100_000

# A malformed control request is the test's mistake: answer 400 rather than 500.
_BAD_CONTROL = (ValueError, TypeError, AttributeError, InvalidOperation, msgspec.DecodeError)


class Simulator:
    """In-memory provider state plus the request logic (no I/O).

    :meth:`handle` takes one HTTP request and returns a :class:`SimResponse`.
    """

    def __init__(self, options: SimOptions) -> None:
        if options.dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {options.dialect!r} (use one of {DIALECTS})")
        if options.fault is not None and options.fault not in FAULTS:
            raise ValueError(f"unknown fault {options.fault!r} (use one of {FAULTS})")
        check_retry_after(options.retry_after)
        if options.fault_count is not None and options.fault_count < 0:
            raise ValueError(f"fault_count must be >= 0, got {options.fault_count}")
        self.options = options
        self.dialect = options.dialect
        self.toksmm = options.dialect == "toksmm"
        self.places = 5 if self.toksmm else 2  # decimals of money in answers
        source = options.catalog if options.catalog is not None else DEFAULT_CATALOG
        self._initial_catalog = normalise_catalog(source)
        self.reset()

    def reset(self) -> None:
        """Back to the state the simulator was started with."""
        o = self.options
        self.catalog: dict[int, Service] = dict(self._initial_catalog)
        self.book = Book(Decimal(str(o.balance)), o.order_start, o.progress_s, o.seed)
        self.behaviours = Behaviours()
        self.currency = o.currency
        self.latency_ms = float(o.latency_ms)
        self.fault: str | None = o.fault
        self.fault_rate = float(o.fault_rate)
        self.fault_action: str | None = o.fault_action
        self.fault_count: int | None = o.fault_count  # requests left to fault; None: all
        self.retry_after: float | None = o.retry_after
        if self.fault_count == 0:
            self.fault = None
        self.reject_error: str | None = None
        self.reject_count = 0  # adds left to reject; negative: every add until cleared
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_CAP)
        self.stats: dict[str, int] = {}
        self.total = 0
        self._services_body: bytes | None = None

    def set_catalog(self, services: Iterable[Mapping[str, Any]]) -> None:
        """Replace the services offered (validated as :func:`load_catalog` does)."""
        self.catalog = normalise_catalog(services)
        self._services_body = None
        self.behaviours.forget()

    def behaviour_of(self, svc: Service) -> Behaviour:
        """How ``svc`` behaves now: its catalog entry under the control API's settings."""
        return self.behaviours.of(svc.id, svc.behaviour)

    def services_body(self) -> bytes:
        """The ``services`` answer; encoded once per catalog, as it is asked for most."""
        if self._services_body is None:
            self._services_body = ENCODE(
                [service_object(s, self.toksmm) for s in self.catalog.values()]
            )
        return self._services_body

    def take_rejection(self) -> str | None:
        """The error the next add must be refused with, if one is set; counts it."""
        if self.reject_error is None or self.reject_count == 0:
            return None
        message = self.reject_error
        if self.reject_count > 0:
            self.reject_count -= 1
            if self.reject_count == 0:
                self.reject_error = None
        return message

    def take_fault(self, action: str) -> str | None:
        """The fault this ``/api/v2`` request gets, if any; counts it.

        A fault hits a ``fault_rate`` fraction of the requests of ``fault_action``
        (of every action when that is ``None``); with a ``fault_count`` it clears
        itself once it has hit that many.
        """
        fault = self.fault
        if fault is None or self.fault_rate <= 0:
            return None
        if self.fault_action is not None and action != self.fault_action:
            return None
        if self.fault_rate < 1 and random.random() >= self.fault_rate:
            return None
        if self.fault_count is not None:
            self.fault_count -= 1
            if self.fault_count <= 0:
                self.fault, self.fault_count = None, None
        return fault

    def handle(
        self, path: str, method: str, headers: Mapping[str, str], body: bytes
    ) -> SimResponse:
        """Answer one request. ``path`` may carry a query string; header names lower case."""
        target, _, query = path.partition("?")
        if target == "/api/v2" or target == "/api/v2/":
            if method != "POST":
                return NOT_FOUND
            return api.answer(self, headers, body)
        if target.startswith("/_sim/"):
            try:
                return control.answer(self, method, target[6:].strip("/"), query, body)
            except _BAD_CONTROL as exc:
                return json_response({"error": f"Bad control request: {exc}"}, 400)
        return NOT_FOUND
