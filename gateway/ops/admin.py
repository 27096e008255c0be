"""Operator commands on the shared state: client keys, money, unresolved orders.

Each function takes an open Redis client and returns the lines to print (or
raises `AdminError`); `gateway.ops.cli` parses arguments and owns the connection.
The changes themselves are `gateway.admin.operations`, shared with the dashboard.
"""

from __future__ import annotations

import time
from decimal import Decimal

from gateway.admin import operations as ops
from gateway.admin.operations import AdminError as AdminError
from gateway.admin.operations import amount as amount
from gateway.money import wire
from gateway.state.clients import ClientRecord, Directory, Mode
from gateway.state.connect import AnyRedis
from gateway.state.ledger import Ledger
from gateway.state.orders import Orders
from gateway.state.recovery import PENDING_GRACE_S


async def _client(directory: Directory, name: str) -> ClientRecord:
    record = await directory.get(name)
    if record is None:
        raise AdminError(f"no client named {name!r}")
    return record


async def keys_create(redis: AnyRedis, name: str, mode: Mode, markup: Decimal | None,
                      credit: Decimal | None, services: list[int] | None,
                      rate_limit: float | None, burst: int | None,
                      dup_window_s: float) -> list[str]:
    key = await ops.create_client(Directory(redis), Ledger(redis), ops.NewClient(
        name=name, mode=mode, markup=markup, credit=credit, services=services,
        rate_limit=rate_limit, burst=burst, dup_window_s=dup_window_s))
    lines = [f"client {name} created ({mode})", f"key: {key}",
             "the key is shown once; only its SHA-256 is stored"]
    if credit:
        lines.insert(1, f"balance: {wire(credit)}")
    return lines


async def keys_list(redis: AnyRedis) -> list[str]:
    ledger = Ledger(redis)
    lines = [f"{'name':<16} {'mode':<8} {'status':<8} {'balance':>14} {'markup':>7} "
             f"{'rate/s':>7} services"]
    for r in await Directory(redis).all():
        balance = wire(await ledger.balance(r.name)) if r.mode == "ledger" else "-"
        lines.append(
            f"{r.name:<16} {r.mode:<8} {'active' if r.active else 'disabled':<8} "
            f"{balance:>14} {r.markup if r.markup is not None else '-'!s:>7} "
            f"{r.rate_limit if r.rate_limit else '-'!s:>7} "
            f"{','.join(map(str, r.services)) if r.services is not None else 'all'}")
    return lines


async def keys_set_active(redis: AnyRedis, name: str, active: bool) -> list[str]:
    return [await ops.set_active(Directory(redis), name, active)]


async def keys_rotate(redis: AnyRedis, name: str) -> list[str]:
    key = await ops.rotate(Directory(redis), name)
    return [f"new key: {key}", "the old key no longer works"]


async def keys_topup(redis: AnyRedis, name: str, value: Decimal, note: str) -> list[str]:
    return [await ops.topup(Directory(redis), Ledger(redis), name, value, note)]


async def keys_history(redis: AnyRedis, name: str) -> list[str]:
    await _client(Directory(redis), name)
    lines = [f"{'time (UTC)':<19}  {'type':<8} {'amount':>14} {'balance':>14}  order  note"]
    for e in await Ledger(redis).history(name):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.t))
        lines.append(f"{when:<19}  {e.type:<8} {wire(e.amount):>14} {wire(e.balance):>14}  "
                     f"{e.order or '-':<6} {e.note}")
    return lines


async def keys_check(redis: AnyRedis, name: str | None) -> tuple[bool, list[str]]:
    """Every ledger client's balance equals the sum of its ledger entries, and every
    charge has an order record that explains it (and every failed order's charge
    was given back)."""
    directory, ledger = Directory(redis), Ledger(redis)
    records = [await _client(directory, name)] if name else await directory.all()
    ok, lines = True, []
    for r in records:
        if r.mode != "ledger":
            continue
        balance, total = await ledger.check(r.name)
        drift = await _charge_drift(redis, ledger, r.name)
        good = balance == total and not drift
        ok = ok and good
        lines.append(f"{r.name}: balance {wire(balance)}, ledger sum {wire(total)}: "
                     f"{'ok' if good else 'MISMATCH'}")
        lines.extend(f"  {problem}" for problem in drift)
    return ok, lines or ["no ledger clients"]


async def _charge_drift(redis: AnyRedis, ledger: Ledger, client: str) -> list[str]:
    """The client's charges that no order record explains, and failed orders whose
    charge was kept. A reservation still in flight (its pending mark younger than
    the reconciler's grace) is not drift yet."""
    charges = {int(e.order): -e.amount for e in await ledger.history(client)
               if e.type == "charge" and e.order.isdigit()}
    if not charges:
        return []
    found = await Orders(redis).get_orders(charges)
    settled = await ledger.settled(client)
    young = {p.order for p in await ledger.pending(client)
             if p.at_ms > (time.time() - PENDING_GRACE_S) * 1000}
    problems = []
    for oid, charged in sorted(charges.items()):
        rec = found.get(oid)
        if rec is None:
            if oid not in young and oid not in settled:
                problems.append(f"order {oid}: charge {wire(charged)} without an order record")
        elif rec.charge != charged and rec.ledger:
            problems.append(f"order {oid}: charge {wire(charged)}, "
                            f"its record says {wire(rec.charge)}")
        elif rec.state == "failed" and oid not in settled:
            problems.append(f"order {oid}: failed, its charge {wire(charged)} not released")
    return problems


async def orders_unknown(redis: AnyRedis) -> list[str]:
    orders = await Orders(redis).unknown_orders()
    if not orders:
        return ["no orders in an unknown state"]
    lines = [f"{'order':>10}  {'state':<11}  {'client':<12}  {'service':>7}  "
             f"{'provider':<14}  {'upstream svc':<12}  {'quantity':>8}  {'charge':>10}  "
             f"created              link"]
    for oid, r in sorted(orders.items()):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created))
        lines.append(f"{oid:>10}  {r.state:<11}  {r.client:<12}  {r.service:>7}  "
                     f"{r.provider:<14}  {r.upstream_service:<12}  {r.quantity:>8}  "
                     f"{r.charge!s:>10}  {created}  {r.link}")
    return lines


async def orders_resolve(redis: AnyRedis, order_id: int, placed: str | None) -> list[str]:
    """Settle an order left `unknown`: it was placed upstream (as UPSTREAM_ID) or not."""
    return [await ops.resolve_order(Orders(redis), Ledger(redis), order_id, placed)]
