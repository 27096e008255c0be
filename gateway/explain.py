"""What the operator sees: why an order would go where it goes, and the catalog as a table.

`route` and `catalog show` build the same views as a serving replica (from the
lists cached in Redis, fetching only what is missing), read the shared breaker
states and known balances, and run the same pure `router.plan`.
"""

from __future__ import annotations

import time

from gateway.catalog import Catalog, ServiceView
from gateway.config import Settings
from gateway.health import Balances, Breakers
from gateway.money import THOUSAND, wire
from gateway.provider import ProviderClient
from gateway.router import Choice, Needs, family, plan
from gateway.store import AnyRedis, Store


class Context:
    """A read-only catalog with breakers and balances, outside a serving process."""

    def __init__(self, settings: Settings, redis: AnyRedis) -> None:
        self.settings = settings
        self.store = Store(redis)
        self.providers = {p.name: ProviderClient.from_settings(p, settings.gateway.transport)
                          for p in settings.providers}
        self.catalog = Catalog(settings, self.store, self.providers)
        self.breakers = Breakers(redis, settings.gateway)
        self.balances = Balances(self.store, self.providers, settings.gateway)

    async def __aenter__(self) -> Context:
        wait = max((p.timeout_s for p in self.settings.providers), default=1.0)
        await self.catalog.start(wait_s=wait, loop=False)
        for name in self.providers:
            await self.balances.load(name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.providers.values():
            await client.aclose()

    async def choices(self, view: ServiceView, quantity: int,
                      runs: int | None) -> list[Choice]:
        total = quantity * (runs or 1)
        blocked: dict[tuple[str, str], str] = {}
        for c in view.candidates:
            state = await self.breakers.describe(c.provider, c.upstream.service)
            if state in ("open", "half-open"):
                blocked[(c.provider, c.upstream.service)] = f"breaker {state}"
            known = self.balances.in_gateway_currency(c.provider)
            if (c.provider, c.upstream.service) not in blocked and known is not None and \
                    known < c.cost_rate * total / THOUSAND:
                blocked[(c.provider, c.upstream.service)] = (
                    f"balance too low (last known {wire(known)})")
        return plan(view.candidates, Needs(
            quantity=quantity, runs=runs, family=family(view.type), features=view.features,
            max_rate=view.max_cost, dripfeed_trusted=view.settings.dripfeed is True),
            blocked=blocked)


def _unlisted(view: ServiceView) -> list[tuple[str, str]]:
    listed = {(c.provider, c.upstream.service) for c in view.candidates}
    return [(r.provider, r.service_id) for r in view.settings.upstreams
            if (r.provider, r.service_id) not in listed]


async def route(ctx: Context, service_id: int, quantity: int, runs: int | None) -> list[str]:
    view = ctx.catalog.views.get(service_id)
    if view is None:
        svc = next((s for s in ctx.settings.services if s.id == service_id), None)
        if svc is None:
            return [f"service {service_id}: not in the catalog"]
        return [f"service {service_id} ({svc.name}): not offered now",
                *(f"  {r.provider} #{r.service_id}: not listed upstream" for r in svc.upstreams)]
    currency = ctx.settings.gateway.currency
    lines = [f"service {view.id} ({view.settings.name}): {quantity}"
             + (f" x {runs} runs" if runs else "")
             + f", advertised {wire(view.rate)} {currency}/1000, min {view.min}, max {view.max}"]
    if view.id in ctx.catalog.held:
        last, new = ctx.catalog.held[view.id]
        lines.append(f"  rate held at {wire(last)} (computed {wire(new)}): "
                     f"`smm-gateway catalog confirm {view.id}` to accept")
    if quantity < view.min or quantity > view.max:
        lines.append(f"  the gateway refuses this quantity (range {view.min}..{view.max})")
    picked = False
    total = quantity * (runs or 1)
    for choice in await ctx.choices(view, quantity, runs):
        c = choice.candidate
        cost = wire(c.cost_rate * total / THOUSAND)
        if choice.reason is None and not picked:
            verdict, picked = "TAKEN: the next order goes here", True
        elif choice.reason is None:
            verdict = "fallback if the ones above refuse"
        else:
            verdict = f"skipped: {choice.reason}"
        lines.append(f"  {c.provider} #{c.upstream.service}: {wire(c.cost_rate)} {currency}/1000,"
                     f" this order {cost}, range {c.upstream.min}..{c.upstream.max} -> {verdict}")
    for provider, sid in _unlisted(view):
        lines.append(f"  {provider} #{sid}: skipped: not listed upstream")
    if not picked:
        lines.append("  no candidate can take it: the client gets "
                     "'Service is temporarily unavailable'")
    return lines


async def show(ctx: Context) -> list[str]:
    currency = ctx.settings.gateway.currency
    lines = []
    for name in ctx.providers:
        fetched = ctx.catalog.fetched_at(name)
        age = f"{time.time() - fetched:.0f}s old" if fetched else "never fetched"
        known = ctx.balances.in_gateway_currency(name)
        balance = f"balance {wire(known)} {currency}" if known is not None else "balance unknown"
        lines.append(f"provider {name}: list {age}, {balance}, "
                     f"breaker {await ctx.breakers.state(name)}")
    lines.append("")
    for view in ctx.catalog.views.values():
        held = " (held: confirm to change)" if view.id in ctx.catalog.held else ""
        lines.append(f"{view.id:>7}  {view.settings.name}  {wire(view.rate)} {currency}/1000"
                     f"{held}  min {view.min} max {view.max}  {view.type}")
        choices = await ctx.choices(view, view.min, None)
        first = next((ch for ch in choices if ch.reason is None), None)
        for ch in choices:
            c = ch.candidate
            mark = "->" if ch is first else "  "
            state = await ctx.breakers.describe(c.provider, c.upstream.service)
            note = f"  ({ch.reason})" if ch.reason else ""
            lines.append(f"         {mark} {c.provider:<14} #{c.upstream.service:<8} "
                         f"{wire(c.cost_rate):>12} {currency}  breaker {state}{note}")
        for provider, sid in _unlisted(view):
            lines.append(f"            {provider:<14} #{sid:<8} not listed upstream")
    for svc in ctx.settings.services:
        if svc.id not in ctx.catalog.views:
            lines.append(f"{svc.id:>7}  {svc.name}  not offered: no candidate is listed upstream")
            lines += [f"            {r.provider:<14} #{r.service_id:<8} not listed upstream"
                      for r in svc.upstreams]
    return lines
