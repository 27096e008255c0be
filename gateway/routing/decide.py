"""The candidate decision, one function for `add` and for the operator's `route`.

`choices()` is everything known without a round trip: the pure rules of
`plan()` (family, quantity range, features, price cap, and the ordering
client's own rules: allowed providers, max rate) and the last known upstream
balances. `verdicts()` then asks each remaining candidate's circuit breakers,
in order, lazily: `add` stops at the first provider that takes the order and,
with `take=True`, becomes the probe of a breaker whose cooldown is over;
`route` walks them all with `take=False`, which changes nothing. Both see the
same reasons, word for word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.money import THOUSAND, wire
from gateway.routing.balances import Balances
from gateway.routing.plan import NO_RULES, Candidate, Choice, ClientRules, Needs, family, plan
from gateway.routing.views import ServiceView
from gateway.state.breakers import Breakers
from gateway.state.clients import ClientRecord


@dataclass(frozen=True, slots=True)
class Verdict:
    candidate: Candidate
    reason: str | None  # None: send it here (if the ones before refused)
    probe: bool = False  # this order is the breaker's half-open probe


def needs(view: ServiceView, quantity: int, runs: int | None,
          rules: ClientRules = NO_RULES) -> Needs:
    return Needs(quantity=quantity, runs=runs, family=family(view.type),
                 features=view.features, max_rate=view.max_cost,
                 dripfeed_trusted=view.settings.dripfeed is True, client=rules)


def client_rules(client: ClientRecord | None) -> ClientRules:
    """The routing rules stored with a client's record (none for no client)."""
    if client is None or (client.allow_providers is None and not client.deny_providers
                          and client.max_rate is None):
        return NO_RULES
    allow = client.allow_providers
    return ClientRules(allow=frozenset(allow) if allow is not None else None,
                       deny=frozenset(client.deny_providers), max_rate=client.max_rate)


def choices(view: ServiceView, quantity: int, runs: int | None,
            balances: Balances, client: ClientRecord | None = None) -> list[Choice]:
    """Every candidate cheapest first, with the reason it is skipped, if any
    (`client`: also the ordering client's rules)."""
    total = quantity * (runs or 1)
    short: dict[tuple[str, str], str] = {}
    for c in view.candidates:
        known = balances.in_gateway_currency(c.provider)
        if known is not None and known < c.cost_rate * total / THOUSAND:
            short[(c.provider, c.upstream.service)] = (
                f"balance too low (last known {wire(known)})")
    return plan(view.candidates, needs(view, quantity, runs, client_rules(client)),
                blocked=short)


async def verdicts(picked: list[Choice], breakers: Breakers,
                   take: bool) -> AsyncIterator[Verdict]:
    """The choices with the breakers' word added, one at a time, in order."""
    for choice in picked:
        c = choice.candidate
        if choice.reason is not None:
            yield Verdict(c, choice.reason)
            continue
        gate = await breakers.allow(c.provider, c.upstream.service, take=take)
        yield Verdict(c, gate.reason, gate.probe)
