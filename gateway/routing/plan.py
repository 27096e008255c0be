"""Price routing as a pure function: which candidate takes an order, and why not the others.

`plan()` sees only a computed catalog view and the order's needs; it does no
I/O, so every rule here is tested with plain tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.models import UpstreamService
from gateway.money import wire

if TYPE_CHECKING:  # the policy module builds on this one
    from gateway.routing.policy import Judgement

FEATURE_FLAGS = ("refill", "cancel")


def family(service_type: str) -> str:
    """Service types that take the same order parameters fall in one family."""
    t = service_type.lower()
    if "comment" in t and "like" not in t:
        return "comments"
    for word in ("mention", "poll", "subscription", "package", "seo"):
        if word in t:
            return word
    return "default"


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    upstream: UpstreamService
    cost_rate: Decimal  # per 1000, in the gateway currency


@dataclass(frozen=True, slots=True)
class ClientRules:
    """A client's routing rules: the providers that may fill its orders and the most
    the gateway may pay for them per 1000 (gateway currency)."""

    allow: frozenset[str] | None = None  # None: every provider not denied
    deny: frozenset[str] = frozenset()
    max_rate: Decimal | None = None

    def reason(self, c: Candidate) -> str | None:
        if c.provider in self.deny or (self.allow is not None and c.provider not in self.allow):
            return "client rules: provider not allowed for this client"
        if self.max_rate is not None and c.cost_rate > self.max_rate:
            return f"client rules: over the client's max rate ({wire(self.max_rate)})"
        return None


NO_RULES = ClientRules()


@dataclass(frozen=True, slots=True)
class Needs:
    quantity: int  # per run
    runs: int | None
    family: str
    features: tuple[str, ...]  # flags the gateway service promises (refill, cancel)
    max_rate: Decimal | None  # a fixed-price service never routes above its price
    dripfeed_trusted: bool = False  # the operator vouches for candidates' drip-feed
    client: ClientRules = NO_RULES  # the ordering client's own rules


@dataclass(frozen=True, slots=True)
class Choice:
    candidate: Candidate
    reason: str | None  # None: usable; otherwise why it was skipped
    judged: Judgement | None = None  # what the service's routing policy expects of it


def _skip_reason(c: Candidate, needs: Needs) -> str | None:
    u = c.upstream
    if family(u.type) != needs.family:
        return f"type {u.type!r} does not take this order's parameters"
    if needs.quantity < u.min or needs.quantity > u.max:
        return f"quantity out of range ({u.min}..{u.max})"
    if needs.runs and not (u.dripfeed or (u.dripfeed is None and needs.dripfeed_trusted)):
        return "feature missing: drip-feed"
    for name in needs.features:
        if getattr(u, name) is False:
            return f"feature missing: {name}"
    if needs.max_rate is not None and c.cost_rate > needs.max_rate:
        return "over price"
    return needs.client.reason(c)


def plan(candidates: Iterable[Candidate], needs: Needs,
         blocked: Mapping[tuple[str, str], str] | None = None) -> list[Choice]:
    """Every candidate cheapest first, each with None or the reason it is skipped.

    `blocked` carries reasons the caller knows from shared state, by (provider,
    upstream service): "balance too low", "breaker open".
    """
    ordered = sorted(candidates, key=lambda c: c.cost_rate)
    blocked = blocked or {}
    return [Choice(c, _skip_reason(c, needs)
                   or blocked.get((c.provider, c.upstream.service))) for c in ordered]


def usable(choices: Iterable[Choice]) -> list[Candidate]:
    return [ch.candidate for ch in choices if ch.reason is None]
