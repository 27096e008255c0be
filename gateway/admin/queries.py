"""What the dashboard reads, as JSON-ready dicts (money as 5-decimal strings): the
JSON API answers them as they are and the pages render the same ones.

Order search is bounded: it reads the newest order buckets first (ids are handed
out in order, so the newest orders are found first) and stops after SEARCH_BUCKETS
buckets (SEARCH_BUCKETS x keys.BUCKET records) or at `limit` matches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from gateway import metrics
from gateway.models import OrderRecord
from gateway.money import wire
from gateway.state.clients import ClientRecord
from gateway.state.history import Change
from gateway.state.keys import BUCKET
from gateway.state.ledger import Entry
from gateway.state.stats import Day
from gateway.wiring import Resources

SEARCH_BUCKETS = 64  # buckets of keys.BUCKET orders read by one search, at most
SEARCH_BATCH = 16  # buckets per round trip
SEARCH_LIMIT = 100
HISTORY = 200  # ledger entries shown per client
ORDER_LEDGER_SCAN = 2000  # a client's latest entries searched for one order's movements


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def day_json(d: Day) -> dict[str, Any]:
    return {"day": d.day, "orders": d.placed, "unknown": d.unknown, "failed": d.failed,
            "fallback": d.fallback, "charged": wire(d.charged), "cost": wire(d.cost),
            "margin": wire(d.margin), "error_rate": _rate(d.unknown + d.failed, d.attempted),
            "fallback_rate": _rate(d.fallback, d.placed)}


def overview(r: Resources, days: list[Day], minutes: list[int],
             unknown: dict[int, OrderRecord]) -> dict[str, Any]:
    """Today, the last 7 days, orders per minute (last 5 and 60 minutes), unknown orders."""
    week = sum(days[1:], days[0]) if days else Day("-")
    return {
        "currency": r.settings.gateway.currency,
        "today": day_json(days[-1]) if days else day_json(Day("-")),
        "week": day_json(week) | {"day": f"{days[0].day}..{days[-1].day}" if days else "-"},
        "days": [day_json(d) for d in days],
        "orders_per_minute": {"last_5": round(sum(minutes[-5:]) / 5, 2),
                              "last_60": round(sum(minutes) / max(len(minutes), 1), 2)},
        "minutes": minutes,
        "unknown_orders": len(unknown),
        "unknown": [order_json(oid, rec) for oid, rec in sorted(unknown.items())],
    }


def balance_floor(r: Resources, provider: str) -> Decimal | None:
    """The balance (in the provider's own currency) below which a provider is flagged,
    if the config sets one (`alerts.balance_below`)."""
    alerts = getattr(r.settings, "alerts", None)
    floors = getattr(alerts, "balance_below", None) or {}
    floor = floors.get(provider) if isinstance(floors, dict) else None
    return Decimal(str(floor)) if floor is not None else None


def routed(r: Resources, provider: str) -> list[str]:
    """The upstream services of `provider` the config (or a mirror) routes to."""
    found = [ref.service_id for svc in r.settings.services for ref in svc.upstreams
             if ref.provider == provider]
    found += [c.upstream.service for v in r.catalog.views.values() for c in v.candidates
              if c.provider == provider]
    return list(dict.fromkeys(found))


async def providers(r: Resources) -> list[dict[str, Any]]:
    """Each provider's health: its breaker's calls and failures over the breaker window
    (every replica's), this process's upstream latency, its balance and list, and the
    scorecards of the services it is routed to."""
    now = r.clock.time()
    latency = metrics.upstream_latency()
    window_s = r.settings.gateway.breaker_window_s
    services = {name: routed(r, name) for name in r.providers}
    cards = await r.scores.scorecards((name, sid) for name, sids in services.items()
                                      for sid in sids)
    out = []
    for name in r.providers:
        balance = r.balances.in_gateway_currency(name)
        known = r.balances.known.get(name)  # (amount in its own currency, when)
        floor = balance_floor(r, name)
        fetched = r.catalog.fetched_at(name)
        state, calls, failures = await r.breakers.window(name)
        lat = latency.get(name)
        out.append({
            "name": name,
            "breaker": state,
            "window": {"seconds": window_s, "calls": calls, "failures": failures,
                       "failure_rate": _rate(failures, calls)},
            "latency": None if lat is None else {
                "calls": int(lat["calls"]), "mean_s": lat["mean_s"],
                "p90_s": lat["p90_s"] if lat["p90_s"] != float("inf") else None},
            "balance": wire(balance) if balance is not None else None,
            "currency": r.settings.provider(name).currency,
            "balance_own": wire(known[0]) if known is not None else None,
            "balance_floor": wire(floor) if floor is not None else None,
            "balance_low": known is not None and floor is not None and known[0] < floor,
            "catalog_age_s": round(max(0.0, now - fetched), 1) if fetched else None,
            "services_listed": r.catalog.listed(name),
            "services_routed": sum(1 for v in r.catalog.views.values()
                                   if any(c.provider == name for c in v.candidates)),
            "scorecards": [cards[(name, sid)].as_json() for sid in services[name]],
            # what each of its services delivered lately, as `route` says it
            "delivery": [{"service": sid, "summary": cards[(name, sid)].summary()}
                         for sid in services[name]],
        })
    return out


def order_json(order_id: int, rec: OrderRecord) -> dict[str, Any]:
    return {
        "order": order_id, "client": rec.client, "service": rec.service,
        "provider": rec.provider, "upstream_service": rec.upstream_service,
        "upstream_id": rec.upstream_id, "link": rec.link, "quantity": rec.quantity,
        "runs": rec.runs, "state": rec.state, "status": rec.status, "remains": rec.remains,
        "charge": wire(rec.charge), "cost": wire(rec.cost),
        "margin": wire(rec.charge - rec.cost), "currency": rec.currency,
        "created": rec.created, "created_utc": _utc(rec.created), "ledger": rec.ledger,
    }


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"


def matches(order_id: int, rec: OrderRecord, q: str, filters: dict[str, str]) -> bool:
    """`q`: an order id, an upstream id, a client, a provider or part of a link;
    `filters`: exact client, provider, and status (a state or an upstream status)."""
    if filters.get("client") and rec.client != filters["client"]:
        return False
    if filters.get("provider") and rec.provider != filters["provider"]:
        return False
    wanted = filters.get("status", "").lower()
    if wanted and wanted not in (rec.state, (rec.status or "").lower()):
        return False
    if not q:
        return True
    return (q == str(order_id) or q == rec.upstream_id or q == rec.client
            or q == rec.provider or q.lower() in rec.link.lower())


async def search(r: Resources, q: str, filters: dict[str, str],
                 limit: int = SEARCH_LIMIT) -> dict[str, Any]:
    q = q.strip()
    limit = max(1, min(limit, SEARCH_LIMIT))
    found: list[dict[str, Any]] = []
    if q.isdigit():  # an order id: found at once, wherever it is
        exact = (await r.orders.get_orders([int(q)])).get(int(q))
        if exact is not None and matches(int(q), exact, q, filters):
            found.append(order_json(int(q), exact))
    top = (await r.orders.last_order_id()) // BUCKET
    numbers = list(range(top, max(-1, top - SEARCH_BUCKETS), -1))
    scanned = 0
    for start in range(0, len(numbers), SEARCH_BATCH):
        if len(found) >= limit:
            break
        batch = numbers[start:start + SEARCH_BATCH]
        records = await r.orders.buckets(batch)
        scanned += len(records)
        for oid in sorted(records, reverse=True):
            if len(found) >= limit:
                break
            if any(f["order"] == oid for f in found):
                continue
            if matches(oid, records[oid], q, filters):
                found.append(order_json(oid, records[oid]))
    complete = top - SEARCH_BUCKETS < 0 or len(found) >= limit
    return {"orders": found, "scanned": scanned, "complete": complete,
            "oldest_searched": max(0, (top - SEARCH_BUCKETS + 1) * BUCKET)}


def tried_json(rec: OrderRecord) -> list[dict[str, Any]]:
    """The upstream adds of an order, in order: the ones stored with the record
    (refused, unreachable, unknown), then the one that placed it (or is in flight)."""
    out: list[dict[str, Any]] = [
        {"provider": a.provider, "upstream_service": a.service, "outcome": a.outcome,
         "message": a.message} for a in rec.tried]
    if rec.state in ("placed", "dispatching") or not out:
        out.append({"provider": rec.provider, "upstream_service": rec.upstream_service,
                    "outcome": "in flight" if rec.state == "dispatching" else rec.state,
                    "message": f"upstream order {rec.upstream_id}" if rec.upstream_id else ""})
    return out


def change_json(c: Change, created: int) -> dict[str, Any]:
    """One entry of an order's status history; `after_s`: since the order was placed."""
    return {"t": c.t, "utc": _utc(c.t), "after_s": c.t - created, "what": c.what,
            "start_count": c.start_count, "remains": c.remains, "refill": c.refill}


def entry_json(e: Entry) -> dict[str, Any]:
    return {"id": e.id, "type": e.type, "amount": wire(e.amount), "balance": wire(e.balance),
            "order": e.order, "note": e.note, "t": e.t, "utc": _utc(e.t)}


async def order(r: Resources, order_id: int) -> dict[str, Any] | None:
    """An order's routing, status and money: charge, cost, margin, what the ledger
    gave back (refunds and releases), its status history and its provider service's
    scorecard."""
    rec = (await r.orders.get_orders([order_id])).get(order_id)
    if rec is None:
        return None
    out = order_json(order_id, rec)
    entries: Iterable[Entry] = []
    if rec.ledger:
        entries = [e for e in await r.ledger.recent(rec.client, ORDER_LEDGER_SCAN)
                   if e.order == str(order_id)]
    moves = sorted(entries, key=lambda e: e.id)
    refunded = sum((e.amount for e in moves if e.type in ("refund", "release")), Decimal(0))
    view = r.catalog.views.get(rec.service)
    out |= {
        "service_name": view.settings.name if view else None,
        "refunded": wire(refunded),
        "net_charge": wire(rec.charge - refunded),
        "net_margin": wire(rec.charge - refunded - rec.cost),
        "ledger_entries": [entry_json(e) for e in moves],
        "resolvable": rec.state in ("unknown", "dispatching"),
        "tried": tried_json(rec),
        "history": [change_json(c, rec.created)
                    for c in (await r.history.read([order_id])).get(order_id, [])],
        "scorecard": (await r.scores.scorecard(rec.provider, rec.upstream_service)).as_json(),
    }
    rescue = (await r.rescues.get([order_id])).get(order_id)
    # flagged: a rescue stopped on something only an operator can settle
    out["flagged"] = rescue.flag if rescue is not None else None
    out["rescue"] = None if rescue is None else {
        "phase": rescue.phase, "rescues": rescue.rescues, "tried": rescue.tried,
        "flag": rescue.flag,
        "prior": [{"provider": p.provider, "upstream_service": p.service,
                   "upstream_id": p.upstream_id, "cost": wire(p.cost),
                   "outcome": p.outcome} for p in rescue.prior]}
    return out


async def client_json(r: Resources, c: ClientRecord) -> dict[str, Any]:
    balance = await r.ledger.balance(c.name) if c.mode == "ledger" else None
    return {"name": c.name, "mode": c.mode, "active": c.active,
            "balance": wire(balance) if balance is not None else None,
            "markup": str(c.markup) if c.markup is not None else None,
            "services": c.services, "rate_limit": c.rate_limit,
            "from_config": bool(c.config_digest), "created_utc": _utc(c.created)}


async def clients(r: Resources) -> list[dict[str, Any]]:
    return [await client_json(r, c) for c in await r.directory.all()]


async def client(r: Resources, name: str) -> dict[str, Any] | None:
    """A client and its latest ledger entries (newest first)."""
    record = await r.directory.get(name)
    if record is None:
        return None
    history = await r.ledger.recent(name, HISTORY) if record.mode == "ledger" else []
    return await client_json(r, record) | {"history": [entry_json(e) for e in history]}
