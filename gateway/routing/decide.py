"""The candidate decision, one function for `add` and for the operator's `route`.

`choices()` is everything known without a round trip: the pure rules of
`plan()` (family, quantity range, features, price cap, and the ordering
client's own rules: allowed providers, max rate) and the last known upstream
balances. `verdicts()` then asks each remaining candidate's circuit breakers,
in order, lazily: `add` stops at the first provider that takes the order and,
with `take=True`, becomes the probe of a breaker whose cooldown is over;
`route` walks them all with `take=False`, which changes nothing. Both see the
same reasons, word for word.

The service's routing policy (`gateway.routing.policy`) then orders what is left
by the evidence of the view's `weighing`: scorecards that `Weigher` reads only
for a policy that needs them, in one Redis round trip at most per add, and
reuses for `gateway.policy_cache_s` (5 s: a card moves little in that time,
and a busy service then costs no round trip per add).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

from gateway.clock import Clock
from gateway.money import THOUSAND, wire
from gateway.routing import policy
from gateway.routing.balances import Balances
from gateway.routing.plan import NO_RULES, Candidate, Choice, ClientRules, Needs, family, plan
from gateway.routing.policy import Judgement, Key, Weighing
from gateway.routing.views import ServiceView
from gateway.state.breakers import Breakers
from gateway.state.clients import ClientRecord
from gateway.state.scores import Scorecard, Scores


@dataclass(frozen=True, slots=True)
class Verdict:
    candidate: Candidate
    reason: str | None  # None: send it here (if the ones before refused)
    probe: bool = False  # this order is the breaker's half-open probe
    judged: Judgement | None = None  # what the routing policy expects of it


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
            balances: Balances, client: ClientRecord | None = None,
            weighing: Weighing | None = None) -> list[Choice]:
    """Every candidate in the service policy's order (cheapest first, for
    `cheapest`), with the reason it is skipped, if any (`client`: also the ordering
    client's rules). The evidence weighed is `weighing`, else the view's."""
    total = quantity * (runs or 1)
    short: dict[tuple[str, str], str] = {}
    for c in view.candidates:
        known = balances.in_gateway_currency(c.provider)
        if known is not None and known < c.cost_rate * total / THOUSAND:
            short[(c.provider, c.upstream.service)] = (
                f"balance too low (last known {wire(known)})")
    planned = plan(view.candidates, needs(view, quantity, runs, client_rules(client)),
                   blocked=short)
    return policy.apply(planned, view.policy, weighing or view.weighing,
                        explore_cap(view, client))


def explore_cap(view: ServiceView, client: ClientRecord | None = None) -> Decimal:
    """The most an explored candidate may cost per 1000: what the client pays for the
    service, less `gateway.min_margin` of it."""
    sells = client.rate(view.id, view.rate) if client is not None else view.rate
    return sells * (1 - view.min_margin)


async def verdicts(picked: list[Choice], breakers: Breakers,
                   take: bool) -> AsyncIterator[Verdict]:
    """The choices with the breakers' word added, one at a time, in order."""
    for choice in picked:
        c = choice.candidate
        if choice.reason is not None:
            yield Verdict(c, choice.reason, judged=choice.judged)
            continue
        gate = await breakers.allow(c.provider, c.upstream.service, take=take)
        yield Verdict(c, gate.reason, gate.probe, choice.judged)


class Weigher:
    """The evidence an add's decision weighs: for a service whose policy needs
    scorecards, its candidates' cards (one round trip for the stale ones, none while
    all were read within `cache_s`) and a draw from `draw` (injectable: tests pass a
    seeded `random.Random(...).random`). Per process; bounded by the configured
    candidates."""

    def __init__(self, scores: Scores, clock: Clock, cache_s: float,
                 draw: Callable[[], float] = random.random) -> None:
        self._scores = scores
        self._clock = clock
        self._cache_s = cache_s
        self.draw = draw
        self._cards: dict[Key, tuple[float, Scorecard]] = {}

    async def weigh(self, view: ServiceView, explore: bool = True) -> Weighing | None:
        """None when the service's policy reads no scorecard (`cheapest`, no floor, no
        exploring). `explore=False`: no draw (what `route` shows)."""
        if not view.policy.needs_scores:
            return None
        wanted = [(c.provider, c.upstream.service) for c in view.candidates]
        now = self._clock.monotonic()
        stale = [k for k in wanted if k not in self._cards
                 or now - self._cards[k][0] >= self._cache_s]
        if stale:
            fresh = await self._scores.scorecards(stale)
            self._cards.update((k, (now, card)) for k, card in fresh.items())
        return Weighing({k: self._cards[k][1] for k in wanted},
                        self.draw() if explore else None)
