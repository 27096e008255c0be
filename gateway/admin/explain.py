"""Why each service's orders go where they go, as data: the operator's `route` and
`catalog show` (`gateway.ops.explain` words it) and the dashboard's Catalog page.

Both ask the same candidate decision as `add` (`gateway.routing.decide`), without
taking a breaker's probe, and show each candidate's scorecard
(`gateway.state.scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.routing import decide
from gateway.routing.views import ServiceView
from gateway.state.scores import Scorecard
from gateway.wiring import Resources

NEVER_FETCHED = "list never fetched"
NOT_LISTED = "not listed upstream"


async def verdicts(r: Resources, view: ServiceView, quantity: int,
                   runs: int | None) -> list[decide.Verdict]:
    picked = decide.choices(view, quantity, runs, r.balances)
    return [v async for v in decide.verdicts(picked, r.breakers, take=False)]


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
        choices = await verdicts(r, view, view.min, None)
        first = next((ch for ch in choices if ch.reason is None), None)
        rows = []
        for ch in choices:
            c = ch.candidate
            state = "probe due" if ch.probe else await r.breakers.state(c.provider)
            rows.append(Row(c.provider, c.upstream.service, c.cost_rate, state,
                            ch is first, ch.reason, cards.get((c.provider, c.upstream.service))))
        rows += [Row(p, sid, None, "-", False, why, cards.get((p, sid)))
                 for p, sid, why in unlisted(r, view)]
        out.append(ServiceRow(view.id, view.settings.name, True, view.rate, view.min,
                              view.max, view.type, r.catalog.held.get(view.id), rows))
    for svc in r.settings.services:
        if svc.id not in r.catalog.views:
            rows = [Row(ref.provider, ref.service_id, None, "-", False,
                        why_absent(r, ref.provider), cards.get((ref.provider, ref.service_id)))
                    for ref in svc.upstreams]
            out.append(ServiceRow(svc.id, svc.name, False, None, None, None, svc.type,
                                  None, rows))
    return out
