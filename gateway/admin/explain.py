"""Why each service's orders go where they go, as data: the operator's `route` and
`catalog show` (`gateway.ops.explain` words it) and the dashboard's Catalog page.

Both ask the same candidate decision as `add` (`gateway.routing.decide`), without
taking a breaker's probe and without exploring, on fresh scorecards (not the
`add` path's short cache), and show each candidate's scorecard
(`gateway.state.scores`) and what the service's routing policy expects of it
(`gateway.routing.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.money import THOUSAND
from gateway.routing import decide
from gateway.routing.policy import Judgement, Weighing, explore_pick
from gateway.routing.views import ServiceView
from gateway.state.clients import ClientRecord
from gateway.state.scores import Scorecard
from gateway.wiring import Resources

NEVER_FETCHED = "list never fetched"
NOT_LISTED = "not listed upstream"


async def verdicts(r: Resources, view: ServiceView, quantity: int, runs: int | None,
                   cards: dict[tuple[str, str], Scorecard] | None = None,
                   client: ClientRecord | None = None) -> list[decide.Verdict]:
    """The decision an add would meet now (`cards`: the scorecards, if already read;
    `client`: also that client's own routing rules)."""
    weighing = None
    if view.policy.needs_scores:
        if cards is None:
            cards = await r.scores.scorecards(
                (c.provider, c.upstream.service) for c in view.candidates)
        weighing = Weighing(cards)
    picked = decide.choices(view, quantity, runs, r.balances, client, weighing=weighing)
    return [v async for v in decide.verdicts(picked, r.breakers, take=False)]


def policy_words(view: ServiceView) -> str | None:
    """The service's policy in one line (None: plain cheapest)."""
    p = view.policy
    if not p.needs_scores:
        return None
    parts = [f"policy {p.name}", f"min_evidence {p.min_evidence:g}"]
    if p.min_success is not None:
        parts.append(f"min_success {p.min_success:.0%}")
    if p.explore_share > 0:
        parts.append(f"explore {p.explore_share:.0%} of orders")
    if p.name == "fastest":
        parts.append(f"cap {p.max_rate}" if p.max_rate is not None
                     else f"cap cheapest x {p.max_factor}")
    return ", ".join(parts)


def explored(choices: list[decide.Verdict], view: ServiceView,
             client: ClientRecord | None = None) -> decide.Verdict | None:
    """The candidate `explore_share` of the orders go to first instead (None: none)."""
    return explore_pick(choices, view.policy, decide.explore_cap(view, client))


def why_absent(r: Resources, provider: str) -> str:
    """Why a configured candidate has no upstream service: the same words everywhere."""
    return NOT_LISTED if r.catalog.fetched_at(provider) else NEVER_FETCHED


def unlisted(r: Resources, view: ServiceView) -> list[tuple[str, str, str]]:
    """(provider, upstream service, why) of the configured candidates not in the view."""
    listed = {(c.provider, c.upstream.service) for c in view.candidates}
    return [(ref.provider, ref.service_id, why_absent(r, ref.provider))
            for ref in view.settings.upstreams if (ref.provider, ref.service_id) not in listed]


@dataclass(frozen=True, slots=True)
class Row:
    """One candidate of a service, as the Catalog page shows it."""

    provider: str
    upstream_service: str
    cost_rate: Decimal | None  # per 1000, gateway currency; None: not listed
    breaker: str  # closed | open | half | probe due | "-"
    picked: bool  # the next order (of the minimum quantity) goes here
    reason: str | None  # why it is skipped; None: usable
    score: Scorecard | None = None  # how it delivered lately
    judged: Judgement | None = None  # what the service's policy expects of it
    explored: bool = False  # the candidate `explore_share` of the orders go to


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: int
    name: str
    offered: bool
    rate: Decimal | None  # advertised per 1000
    min: int | None
    max: int | None
    type: str
    held: tuple[Decimal, Decimal] | None  # (advertised, computed) while held
    rows: list[Row]
    policy: str = "cheapest"  # the service's routing policy, in words

    @property
    def pick(self) -> Row | None:
        return next((row for row in self.rows if row.picked), None)


async def scorecards(r: Resources) -> dict[tuple[str, str], Scorecard]:
    """The scorecard of every candidate, configured or mirrored (one round trip)."""
    pairs = [(ref.provider, ref.service_id) for svc in r.settings.services
             for ref in svc.upstreams]
    pairs += [(c.provider, c.upstream.service) for v in r.catalog.views.values()
              for c in v.candidates]
    return await r.scores.scorecards(pairs)


async def service_rows(r: Resources) -> list[ServiceRow]:
    """Every configured (and mirrored) service with its candidates, cheapest first,
    asked for its minimum quantity."""
    out: list[ServiceRow] = []
    cards = await scorecards(r)
    for view in r.catalog.views.values():
        choices = await verdicts(r, view, view.min, None, cards)
        first = next((ch for ch in choices if ch.reason is None), None)
        explore = explored(choices, view)
        rows = []
        for ch in choices:
            c = ch.candidate
            state = "probe due" if ch.probe else await r.breakers.state(c.provider)
            rows.append(Row(c.provider, c.upstream.service, c.cost_rate, state,
                            ch is first, ch.reason, cards.get((c.provider, c.upstream.service)),
                            ch.judged, ch is explore))
        rows += [Row(p, sid, None, "-", False, why, cards.get((p, sid)))
                 for p, sid, why in unlisted(r, view)]
        out.append(ServiceRow(view.id, view.settings.name, True, view.rate, view.min,
                              view.max, view.type, r.catalog.held.get(view.id), rows,
                              policy_words(view) or "cheapest"))
    for svc in r.settings.services:
        if svc.id not in r.catalog.views:
            rows = [Row(ref.provider, ref.service_id, None, "-", False,
                        why_absent(r, ref.provider), cards.get((ref.provider, ref.service_id)))
                    for ref in svc.upstreams]
            out.append(ServiceRow(svc.id, svc.name, False, None, None, None, svc.type,
                                  None, rows))
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """One candidate of one order's route: what it costs and what the add would do."""

    provider: str
    upstream_service: str
    cost_rate: Decimal  # per 1000, gateway currency
    cost: Decimal  # this order's cost there
    min: int
    max: int
    breaker: str  # closed | open | half | probe due
    verdict: str  # taken | fallback | skipped
    reason: str | None  # why it is skipped
    score: Scorecard | None
    judged: Judgement | None
    explored: bool


@dataclass(frozen=True, slots=True)
class Route:
    """Where one order (service, quantity, runs, client) would go now, and why: what
    `smm-gateway route` prints and the Catalog page's route form shows."""

    service: int
    name: str
    offered: bool  # False: no candidate is listed (`unlisted` says why)
    quantity: int
    runs: int | None
    client: str | None
    rate: Decimal | None = None
    min: int | None = None
    max: int | None = None
    held: tuple[Decimal, Decimal] | None = None
    policy: str | None = None
    steps: tuple[Step, ...] = ()
    unlisted: tuple[tuple[str, str, str], ...] = ()
    explore_share: float = 0.0

    @property
    def in_range(self) -> bool:
        return self.min is None or self.max is None or self.min <= self.quantity <= self.max

    @property
    def taken(self) -> Step | None:
        return next((s for s in self.steps if s.verdict == "taken"), None)


async def route(r: Resources, service_id: int, quantity: int, runs: int | None,
                client: ClientRecord | None = None) -> Route | None:
    """The route of one order (None: no such service). `client`: with its rules."""
    name = client.name if client is not None else None
    view = r.catalog.views.get(service_id)
    if view is None:
        svc = next((s for s in r.settings.services if s.id == service_id), None)
        if svc is None:
            return None
        return Route(service_id, svc.name, False, quantity, runs, name, unlisted=tuple(
            (u.provider, u.service_id, why_absent(r, u.provider)) for u in svc.upstreams))
    total = quantity * (runs or 1)
    cards = await scorecards(r)
    choices = await verdicts(r, view, quantity, runs, cards, client)
    explore = explored(choices, view, client)
    steps: list[Step] = []
    taken = False
    for ch in choices:
        c = ch.candidate
        if ch.reason is None and not taken:
            verdict, taken = "taken", True
        else:
            verdict = "fallback" if ch.reason is None else "skipped"
        state = "probe due" if ch.probe else await r.breakers.state(c.provider)
        steps.append(Step(c.provider, c.upstream.service, c.cost_rate,
                          c.cost_rate * total / THOUSAND, c.upstream.min, c.upstream.max,
                          state, verdict, ch.reason, cards.get((c.provider, c.upstream.service)),
                          ch.judged, ch is explore))
    return Route(view.id, view.settings.name, True, quantity, runs, name, view.rate, view.min,
                 view.max, r.catalog.held.get(view.id), policy_words(view), tuple(steps),
                 tuple(unlisted(r, view)), view.policy.explore_share)
