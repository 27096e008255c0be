"""Operator alerts, as raised by the code that sees them.

State, routing and actions code raises an `Alert` through the `Events` sink it
was given (`gateway.wiring` passes the real one, `gateway.alerts.Alerter`; the
default `NOOP` drops everything, so a class built without one still works).
`emit` never blocks and never raises: an alert must not slow or fail a request.

`AlertPayload` is what a webhook receives and what the recent-alerts list in
Redis keeps. It never carries a provider's or a client's key.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

Kind = Literal["balance_low", "breaker_open", "breaker_closed", "order_unknown",
               "rate_held", "service_vanished", "redis_down", "redis_up",
               "order_rescued", "rescue_stopped"]
Severity = Literal["critical", "warning", "info"]

SEVERITY: dict[str, Severity] = {
    "redis_down": "critical",
    "order_unknown": "critical",  # money may be at stake: an operator must resolve it
    "breaker_open": "warning",
    "balance_low": "warning",
    "rate_held": "warning",
    "service_vanished": "warning",
    "rescue_stopped": "warning",  # an order a rescue left to the operator
    "order_rescued": "info",
    "breaker_closed": "info",
    "redis_up": "info",
}


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One thing an operator should hear about.

    `once`: what makes two raises the same alert, across every replica (sent once
    per `repeat_s`, or once for good when None). `local`: raised because Redis is
    away, so sent by this replica alone and never deduplicated through Redis.
    """

    kind: Kind
    subject: str  # what it is about: a provider, an order id, a service id
    message: str  # one line for a human
    details: dict[str, str | int | float | bool | None] = {}
    once: str = ""
    repeat_s: float | None = None
    local: bool = False

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.kind]

    @property
    def identity(self) -> str:
        return self.once or f"{self.kind}:{self.subject}"


class AlertPayload(msgspec.Struct, kw_only=True):
    """The JSON a webhook receives; `text` is what chat webhooks (Slack, Mattermost,
    Rocket.Chat, Google Chat) show."""

    text: str
    kind: str
    severity: str
    subject: str
    message: str
    details: dict[str, Any]
    at: str  # ISO 8601, UTC
    gateway: str  # the replica that sent it (host:pid)


class Events(Protocol):
    def emit(self, alert: Alert) -> None:
        """Raise an alert; returns at once, never raises."""
        ...

    def settle(self, identity: str) -> None:
        """The condition behind `identity` has ended: if it comes back it alerts at
        once instead of waiting out `repeat_s`."""
        ...


class _Nothing:
    def emit(self, alert: Alert) -> None:
        pass

    def settle(self, identity: str) -> None:
        pass


NOOP: Events = _Nothing()
