"""Routing policies: in which order an order's usable candidates are tried, from how
each has delivered lately (its scorecard, `gateway.state.scores`).

A pure function of the candidates `plan()` left, the service's `Policy` and the
evidence of one decision (`Weighing`: scorecards and a random draw); no I/O.

    cheapest    by rate (what `plan()` already gives): no scorecard is read
    best_value  by expected cost per 1000 delivered:
                    rate / delivered x (1 + slow start) x (1 + refills failed)
                delivered = the card's mean delivered fraction of ended orders
                            (Completed 1, Partial what it delivered, Canceled or
                            Refunded 0), at least MIN_DELIVERED
                slow start = slow_start_penalty x hours of mean start beyond
                             slow_start_after_s
                refills failed = refill_refusal_penalty x (1 - accepted share x
                                 completed share of the refills that ended)
    fastest     by expected time to complete (the card's mean seconds from
                placement to Completed), among candidates within a price cap:
                the service's `max_rate`, else the cheapest usable rate x
                `fastest_max_factor`; dearer ones are skipped. Candidates with
                too little evidence follow those with a known time, cheapest first.

A card whose weight `n` (ended orders, decayed; to 2 decimals) is below
`min_evidence` gets the neutral prior: delivered 1.0, no penalty, no floor
(best_value then orders it by rate, like cheapest). Whatever the policy:

- `min_success`: a candidate with enough evidence whose completed share is below
  the floor is skipped, with the reason. If that skips every candidate, the order
  gets the usual "temporarily unavailable" answer: the floor is the operator's word.
- `explore_share`: when the decision's draw is below it, the usable candidate with
  the least evidence under `min_evidence` goes first (if its rate leaves the
  client's price minus `gateway.min_margin`), so a new provider earns a score.
  The rest keep the policy's order, as fallback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from gateway.config import GatewaySettings, PolicyName, ServiceSettings
from gateway.money import wire
from gateway.routing.plan import Candidate, Choice
from gateway.state.scores import Scorecard

Key = tuple[str, str]  # (provider, upstream service id)
MIN_DELIVERED = 0.05  # best_value never divides by less (a provider that delivers nothing)
HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Policy:
    """A service's routing policy, resolved from its settings and the gateway's."""

    name: PolicyName = "cheapest"
    min_evidence: float = 20.0
    min_success: float | None = None
    explore_share: float = 0.0
    slow_start_after_s: float = 3600.0
    slow_start_penalty: float = 0.05
    refill_refusal_penalty: float = 0.25
    max_rate: Decimal | None = None  # fastest: the cap per 1000 (None: the factor)
    max_factor: Decimal = Decimal("1.5")  # fastest: cap = cheapest usable rate x this

    @property
    def needs_scores(self) -> bool:
        """Whether a decision reads scorecards at all (cheapest alone does not)."""
        return self.name != "cheapest" or self.min_success is not None \
            or self.explore_share > 0


CHEAPEST = Policy()


def resolve(svc: ServiceSettings, g: GatewaySettings) -> Policy:
    def pick(own: Any, default: Any) -> Any:
        return own if own is not None else default

    return Policy(name=pick(svc.policy, g.policy), min_evidence=g.min_evidence,
                  min_success=pick(svc.min_success, g.min_success),
                  explore_share=pick(svc.explore_share, g.explore_share),
                  slow_start_after_s=g.slow_start_after_s,
                  slow_start_penalty=g.slow_start_penalty,
                  refill_refusal_penalty=g.refill_refusal_penalty,
                  max_rate=svc.max_rate, max_factor=g.fastest_max_factor)


@dataclass(frozen=True, slots=True)
class Weighing:
    """The evidence one decision weighs: the candidates' cards, and a uniform draw in
    [0, 1) for exploring (None: never explore, as `route` asks)."""

    cards: Mapping[Key, Scorecard]
    draw: float | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    """What a policy expects of one candidate, and from which figures."""

    policy: PolicyName
    n: float  # evidence weight of its card
    scored: bool  # n >= min_evidence: the figures below are its own, else the prior
    delivered: float  # expected delivered fraction
    slow: float  # slow-start surcharge (0.1: +10 %)
    refills: float  # refill surcharge
    per_delivered: Decimal  # expected cost per 1000 delivered (gateway currency)
    time_s: float | None  # expected seconds from placement to Completed
    success: float | None  # completed share (None: no ended order)
    min_evidence: float
    explored: bool = False  # this order goes here to earn it a score

    def words(self) -> str:
        """One line for `route`."""
        head = f"{self.policy}: "
        if not self.scored:
            head += f"too little evidence (n {self.n:.1f} < {self.min_evidence:g}): " + (
                "no expected time, after the timed ones, cheapest first"
                if self.policy == "fastest" else "neutral prior, delivered 100%")
        elif self.policy == "fastest":
            head += (f"expected {_duration(self.time_s)} to complete" if self.time_s is not None
                     else "never seen Completed")
        else:
            head += (f"{wire(self.per_delivered)} per 1000 delivered (delivered "
                     f"{self.delivered:.0%}, slow start +{self.slow:.0%}, "
                     f"refills +{self.refills:.0%})")
        if self.scored:
            head += f", n {self.n:.1f}"
            if self.success is not None:
                head += f", completed {self.success:.0%}"
        return head + (" -- EXPLORED: this order earns it a score" if self.explored else "")

    def brief(self) -> str:
        """A column for `catalog show`."""
        if not self.scored:
            return f"{self.policy}: prior (n < {self.min_evidence:g})"
        if self.policy == "fastest":
            return f"{self.policy}: ~{_duration(self.time_s)}"
        return f"{self.policy}: {wire(self.per_delivered)}/1000 delivered"

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "n": round(self.n, 2), "scored": self.scored,
                "delivered": round(self.delivered, 3), "slow_start": round(self.slow, 3),
                "refills": round(self.refills, 3), "per_delivered": wire(self.per_delivered),
                "time_s": None if self.time_s is None or math.isinf(self.time_s)
                else round(self.time_s), "completed_share": None if self.success is None
                else round(self.success, 3), "explored": self.explored}


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


def judge(c: Candidate, card: Scorecard | None, p: Policy) -> Judgement:
    n = card.n if card is not None else 0.0
    # n as shown (2 decimals): 5 orders that ended a minute ago are n 5, not 4.9999
    if card is None or round(n, 2) < p.min_evidence or n <= 0:
        return Judgement(p.name, n, False, 1.0, 0.0, 0.0, c.cost_rate, None, None,
                         p.min_evidence)
    delivered = max(MIN_DELIVERED, card.delivered_mean or 0.0)
    start = card.start_mean_s or 0.0
    slow = p.slow_start_penalty * max(0.0, start - p.slow_start_after_s) / HOUR_S
    refills = 0.0
    if card.refill_requests > 1e-9:
        done = card.refill_success_share
        kept = (card.refill_accepted_share or 0.0) * (1.0 if done is None else done)
        refills = p.refill_refusal_penalty * (1 - kept)
    factor = (1 + slow) * (1 + refills) / delivered
    per = c.cost_rate * Decimal(repr(round(factor, 6)))
    time_s = card.complete_mean_s if card.complete_mean_s is not None else math.inf
    return Judgement(p.name, n, True, delivered, slow, refills, per, time_s,
                     card.completed_share, p.min_evidence)


def _order_key(ch: Choice) -> tuple[Any, ...]:
    j = ch.judged
    assert j is not None
    if j.policy == "best_value":
        return (j.per_delivered, ch.candidate.cost_rate)
    if j.policy == "fastest":
        if not j.scored:
            return (1, 0.0, ch.candidate.cost_rate)
        timed = j.time_s is not None and not math.isinf(j.time_s)
        return (0 if timed else 2, j.time_s if timed else 0.0, ch.candidate.cost_rate)
    return (ch.candidate.cost_rate,)


def _policy_reason(j: Judgement, c: Candidate, p: Policy, cap: Decimal | None) -> str | None:
    if p.min_success is not None and j.scored and (j.success or 0.0) < p.min_success:
        return (f"below min_success: completed {j.success or 0.0:.0%} < "
                f"{p.min_success:.0%} (n {j.n:.1f})")
    if cap is not None and c.cost_rate > cap:
        return f"fastest: over the price cap ({wire(cap)})"
    return None


def apply(choices: list[Choice], p: Policy, weighing: Weighing | None,
          explore_cap: Decimal | None = None) -> list[Choice]:
    """The choices (cheapest first, from `plan()`) in the policy's order, each judged,
    with the policy's skip reasons added. `explore_cap`: the most an explored
    candidate may cost per 1000 (the client's price less the minimum margin)."""
    if not p.needs_scores:
        return choices
    cards = weighing.cards if weighing is not None else {}
    cap = None
    if p.name == "fastest":
        cheapest = next((ch.candidate.cost_rate for ch in choices if ch.reason is None), None)
        cap = p.max_rate if p.max_rate is not None else (
            cheapest * p.max_factor if cheapest is not None else None)
    judged = []
    for ch in choices:
        c = ch.candidate
        j = judge(c, cards.get((c.provider, c.upstream.service)), p)
        reason = ch.reason or _policy_reason(j, c, p, cap)
        judged.append(replace(ch, reason=reason, judged=j))
    ordered = sorted(judged, key=_order_key)
    draw = weighing.draw if weighing is not None else None
    if draw is None or draw >= p.explore_share:
        return ordered
    pick = explore_pick(ordered, p, explore_cap)
    if pick is None:
        return ordered
    assert pick.judged is not None
    explored = replace(pick, judged=replace(pick.judged, explored=True))
    return [explored, *(ch for ch in ordered if ch is not pick)]


class Judged(Protocol):
    """A candidate with its skip reason and judgement (a `Choice`, a `Verdict`)."""

    @property
    def candidate(self) -> Candidate: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def judged(self) -> Judgement | None: ...


J = TypeVar("J", bound=Judged)


def explore_pick(ordered: Sequence[J], p: Policy, explore_cap: Decimal | None) -> J | None:
    """The candidate an exploring order goes to first: the usable one with the least
    evidence under `min_evidence`, within `explore_cap` (None: the policy's first
    pick stands, or nothing is left to explore)."""
    if p.explore_share <= 0:
        return None
    usable = [ch for ch in ordered if ch.reason is None]
    fresh = [ch for ch in usable if ch.judged is not None and not ch.judged.scored
             and (explore_cap is None or ch.candidate.cost_rate <= explore_cap)]
    if not fresh:
        return None
    pick = min(fresh, key=lambda ch: (ch.judged.n if ch.judged else 0.0,
                                      ch.candidate.cost_rate))
    return None if pick is usable[0] else pick
