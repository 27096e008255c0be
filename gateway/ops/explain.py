"""What the operator sees: why an order would go where it goes, and the catalog as a table.

`route` and `catalog show` open the same resources as a serving replica
(`gateway.wiring`, without its background tasks) and ask the same candidate
decision as `add` (`gateway.routing.decide`), without taking a breaker's probe:
`gateway.admin.explain`, which the dashboard's Catalog page shows as a table.
Under each candidate: its scorecard (`gateway.state.scores`) and, for a service
with a routing policy (`gateway.routing.policy`), what the policy expects of it.
"""

from __future__ import annotations

import time

from gateway.admin.explain import policy_words, scorecards, unlisted, verdicts, why_absent
from gateway.admin.explain import route as explain_route
from gateway.money import wire
from gateway.wiring import Resources


async def route(ctx: Resources, service_id: int, quantity: int, runs: int | None) -> list[str]:
    found = await explain_route(ctx, service_id, quantity, runs)
    if found is None:
        return [f"service {service_id}: not in the catalog"]
    if not found.offered:
        return [f"service {service_id} ({found.name}): not offered now",
                *(f"  {p} #{sid}: {why}" for p, sid, why in found.unlisted)]
    currency = ctx.settings.gateway.currency
    assert found.rate is not None
    lines = [f"service {found.service} ({found.name}): {quantity}"
             + (f" x {runs} runs" if runs else "")
             + f", advertised {wire(found.rate)} {currency}/1000, min {found.min},"
             f" max {found.max}"]
    if found.held is not None:
        last, new = found.held
        lines.append(f"  rate held at {wire(last)} (computed {wire(new)}): "
                     f"`smm-gateway catalog confirm {found.service}` to accept")
    if not found.in_range:
        lines.append(f"  the gateway refuses this quantity (range {found.min}..{found.max})")
    if found.policy:
        lines.append(f"  {found.policy}")
    for step in found.steps:
        verdict = {"taken": "TAKEN: the next order goes here",
                   "fallback": "fallback if the ones above refuse"}.get(
            step.verdict, f"skipped: {step.reason}")
        lines.append(f"  {step.provider} #{step.upstream_service}: {wire(step.cost_rate)} "
                     f"{currency}/1000, this order {wire(step.cost)}, range "
                     f"{step.min}..{step.max} -> {verdict}")
        if step.score is not None:
            lines.append(f"      score: {step.score.summary()}")
        if step.judged is not None:
            lines.append(f"      {step.judged.words()}")
        if step.explored:
            lines.append(f"      explored: {found.explore_share:.0%} of orders go here "
                         "first, to earn it a score")
    for provider, sid, why in found.unlisted:
        lines.append(f"  {provider} #{sid}: skipped: {why}")
    if found.taken is None:
        lines.append("  no candidate can take it: the client gets "
                     "'Service is temporarily unavailable'")
    return lines


async def show(ctx: Resources) -> list[str]:
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
    cards = await scorecards(ctx)
    for view in ctx.catalog.views.values():
        held = " (held: confirm to change)" if view.id in ctx.catalog.held else ""
        lines.append(f"{view.id:>7}  {view.settings.name}  {wire(view.rate)} {currency}/1000"
                     f"{held}  min {view.min} max {view.max}  {view.type}")
        words = policy_words(view)
        if words:
            lines.append(f"         {words}")
        choices = await verdicts(ctx, view, view.min, None, cards)
        first = next((ch for ch in choices if ch.reason is None), None)
        for ch in choices:
            c = ch.candidate
            mark = "->" if ch is first else "  "
            state = "probe due" if ch.probe else await ctx.breakers.state(c.provider)
            note = f"  ({ch.reason})" if ch.reason else ""
            card = cards.get((c.provider, c.upstream.service))
            score = f"  [{card.brief()}]" if card is not None else ""
            if ch.judged is not None:
                score += f"  {ch.judged.brief()}"
            lines.append(f"         {mark} {c.provider:<14} #{c.upstream.service:<8} "
                         f"{wire(c.cost_rate):>12} {currency}  breaker {state}{note}{score}")
        for provider, sid, why in unlisted(ctx, view):
            lines.append(f"            {provider:<14} #{sid:<8} {why}")
    for svc in ctx.settings.services:
        if svc.id not in ctx.catalog.views:
            lines.append(f"{svc.id:>7}  {svc.name}  not offered: no candidate is listed upstream")
            lines += [f"            {r.provider:<14} #{r.service_id:<8} "
                      f"{why_absent(ctx, r.provider)}" for r in svc.upstreams]
    return lines
