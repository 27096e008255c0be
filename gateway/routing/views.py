"""A gateway service as the catalog sees it now (`ServiceView`), built from the
upstream lists by a pure function, and the `services` answer it gives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import msgspec

from gateway.config import GatewaySettings, ServiceSettings
from gateway.digest import sha256_hex
from gateway.models import Missing, UpstreamService
from gateway.money import Converter, rate_up, wire
from gateway.routing.plan import Candidate, family
from gateway.routing.policy import CHEAPEST, Policy, Weighing, resolve
from gateway.wire import ServiceItem


@dataclass(slots=True)
class ServiceView:
    """A gateway service as the catalog sees it now."""

    settings: ServiceSettings
    candidates: list[Candidate]  # listed upstream and within price, cheapest first
    rate: Decimal
    min: int
    max: int
    type: str
    refill: bool
    cancel: bool
    dripfeed: bool
    form: Any
    max_cost: Decimal | None = None  # routing never pays more per 1000 than this
    markup: Decimal = Decimal(1)
    link_guard: bool = False  # one active order per link within `link_family`
    link_family: str = ""  # "name:<link_family>" when configured, else "id:<service id>"
    link_ttl_s: float = 0.0  # a link's mark lapses after this at the latest
    min_margin: Decimal = Decimal(0)  # an explored candidate leaves at least this share
    policy: Policy = CHEAPEST  # how candidates are ordered (gateway.routing.policy)
    # the evidence one add's decision weighs (`weighed`); None in the catalog's views
    weighing: Weighing | None = None

    @property
    def id(self) -> int:
        return self.settings.id

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f for f in ("refill", "cancel") if getattr(self, f))

    def weighed(self, weighing: Weighing | None) -> ServiceView:
        """This view for one order: with the scorecards (and draw) its policy weighs."""
        return self if weighing is None else replace(self, weighing=weighing)

    def answer(self) -> ServiceItem:
        return ServiceItem(
            service=self.id, name=self.settings.name, type=self.type,
            category=self.settings.category, rate=wire(self.rate), min=str(self.min),
            max=str(self.max), refill=self.refill, cancel=self.cancel,
            dripfeed=self.dripfeed, desc=self.settings.desc or msgspec.UNSET, form=self.form)


def _all_true(flags: list[bool | None]) -> bool:
    return bool(flags) and all(f is True for f in flags)


def build_view(svc: ServiceSettings, lists: Mapping[str, Mapping[str, UpstreamService]],
               remembered: Mapping[str, Mapping[str, UpstreamService]],
               converter: Converter, gateway: GatewaySettings,
               currencies: Mapping[str, str]) -> ServiceView | None:
    """The view of one gateway service; None when no candidate is listed or remembered.

    Candidates a provider lists are routable. Those it stopped listing within the
    grace period (`remembered`) keep the service advertised, at its last known
    price, but take no orders.
    """
    def candidates(source: Mapping[str, Mapping[str, UpstreamService]]) -> list[Candidate]:
        out = []
        for ref in svc.upstreams:
            upstream = source.get(ref.provider, {}).get(ref.service_id)
            if upstream is not None:
                cost = converter.to_gateway(upstream.rate, currencies[ref.provider])
                out.append(Candidate(ref.provider, upstream, cost))
        return sorted(out, key=lambda c: c.cost_rate)

    live = candidates(lists)
    basis = live or candidates(remembered)
    if not basis:
        return None
    max_cost = None
    if svc.price is not None:
        max_cost = svc.price * (1 - gateway.min_margin)
        basis = [c for c in basis if c.cost_rate <= max_cost] or basis
    markup = svc.markup if svc.markup is not None else gateway.markup
    rate = svc.price if svc.price is not None else rate_up(basis[0].cost_rate * markup)
    ups = [c.upstream for c in basis]
    form = next((u.form for u in ups if u.form), None)
    return ServiceView(
        settings=svc,
        candidates=live,
        rate=rate,
        min=min(u.min for u in ups),
        max=max(u.max for u in ups),
        type=svc.type,
        refill=svc.refill if svc.refill is not None else _all_true([u.refill for u in ups]),
        cancel=svc.cancel if svc.cancel is not None else _all_true([u.cancel for u in ups]),
        dripfeed=svc.dripfeed if svc.dripfeed is not None else any(u.dripfeed for u in ups),
        form=form if family(svc.type) != "default" else None,
        max_cost=max_cost,
        markup=markup,
        link_guard=svc.link_guard if svc.link_guard is not None else gateway.link_guard,
        link_family=link_family(svc),
        link_ttl_s=gateway.link_guard_ttl_s,
        min_margin=gateway.min_margin,
        policy=resolve(svc, gateway),
    )


def link_family(svc: ServiceSettings) -> str:
    """The services whose orders share one active order per link: those configured with
    the same `link_family`, else the service alone."""
    name = (svc.link_family or "").strip()
    return f"name:{name}" if name else f"id:{svc.id}"


def sources(lists: Mapping[str, dict[str, UpstreamService]],
            missing: Mapping[str, Mapping[str, Missing]], stamps: Mapping[str, float],
            now: float, g: GatewaySettings,
            ) -> tuple[dict[str, dict[str, UpstreamService]],
                       dict[str, dict[str, UpstreamService]]]:
    """(routable lists, remembered-within-grace lists) per provider.

    A list past its hard TTL (`catalog_max_stale_s`) is not routed to; its
    services stay remembered for the grace period after that.
    """
    live: dict[str, dict[str, UpstreamService]] = {}
    remembered: dict[str, dict[str, UpstreamService]] = {}
    for name, services in lists.items():
        gone = {sid: m.service for sid, m in missing.get(name, {}).items()
                if now - m.since < g.catalog_grace_s}
        if now - stamps.get(name, 0.0) > g.catalog_max_stale_s:
            stale_since = stamps[name] + g.catalog_max_stale_s
            if now - stale_since < g.catalog_grace_s:
                gone.update(services)
            live[name] = {}
        else:
            live[name] = services
        remembered[name] = gone
    return live, remembered


def etag(body: bytes) -> str:
    return '"' + sha256_hex(body)[:24] + '"'
