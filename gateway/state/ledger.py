"""Prepaid client balances: reserve, release, refund and top up, exactly, in Redis.

Every movement is one Lua script that changes the balance and appends the
matching entry to the client's ledger stream, atomically; all of a client's keys
share one hash tag, so the scripts also run on a Redis Cluster. Amounts are
integers of `money.UNIT` inside Redis (INCRBY/DECRBY: int64 arithmetic) and
Decimal everywhere else.

Settlement of an order (release after a definite rejection, refund after
Partial/Canceled/Refunded) is marked with HSETNX on the order id inside the same
script: however many replicas see the final status, however often, it happens
once.

A reservation also leaves a pending mark (order id -> when and how much) in the
same script; the order's record settles it. A mark whose order never got a
record (the replica died in between) is found and released by the reconciler
(`gateway.state.recovery`): no money moves without a record that explains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.clock import SYSTEM, Clock
from gateway.money import from_units, to_units
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors, text


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    type: str  # topup | charge | release | refund | adjust
    amount: Decimal
    balance: Decimal
    order: str
    note: str
    t: float


@dataclass(frozen=True, slots=True)
class Pending:
    """A reservation whose order record has not settled it yet."""

    order: int
    amount: Decimal
    at_ms: int


@maps_redis_errors
class Ledger:
    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._redis = redis
        self._clock = clock
        self._reserve = redis.register_script(scripts.RESERVE)
        self._credit = redis.register_script(scripts.CREDIT)
        self._charge_once = redis.register_script(scripts.CHARGE_ONCE)

    async def reserve(self, client: str, amount: Decimal, order_id: int) -> bool:
        """Take `amount` for an order before it is sent; False if the balance is short."""
        now = self._clock.time()
        units = to_units(amount)
        ok, _ = await self._reserve(
            keys=[keys.client_balance(client), keys.client_ledger(client),
                  keys.client_pending(client), keys.client_charged(client)],
            args=[units, order_id, f"{now:.3f}", "", f"{int(now * 1000)}:{units}"])
        return bool(ok)

    async def charge_once(self, client: str, amount: Decimal, order_id: int,
                          note: str) -> bool:
        """Charge an order whose reservation was lost (a failover to a replica that
        missed it); nothing when its reservation stands. True if charged now."""
        charged = await self._charge_once(
            keys=[keys.client_balance(client), keys.client_ledger(client),
                  keys.client_charged(client)],
            args=[to_units(amount), order_id, f"{self._clock.time():.3f}", note])
        return bool(charged)

    async def credit(self, client: str, amount: Decimal, kind: str, order_id: int | None = None,
                     note: str = "", settle: bool = False) -> bool:
        """Add `amount` (negative to take); with `settle`, at most once per order.

        True if the balance moved, False if this order was already settled.
        """
        ok, _ = await self._credit(
            keys=[keys.client_balance(client), keys.client_ledger(client),
                  keys.client_settled(client), keys.client_pending(client)],
            args=[to_units(amount), "" if order_id is None else order_id,
                  f"{self._clock.time():.3f}", kind, note, "1" if settle else "0"])
        return bool(ok)

    async def pending(self, client: str) -> list[Pending]:
        """The client's reservations not yet settled by their order's record."""
        out = []
        for oid, value in (await self._redis.hgetall(keys.client_pending(client))).items():
            at_ms, units = text(value).split(":")
            out.append(Pending(int(text(oid)), from_units(units), int(at_ms)))
        return out

    async def forget_pending(self, client: str, order_ids: list[int]) -> None:
        """These reservations are explained by their order records."""
        if order_ids:
            await self._redis.hdel(keys.client_pending(client), *map(str, order_ids))

    async def settled(self, client: str) -> dict[int, str]:
        """Order id -> how its reservation was settled (release, refund)."""
        raw = await self._redis.hgetall(keys.client_settled(client))
        return {int(text(k)): text(v) for k, v in raw.items()}

    async def balance(self, client: str) -> Decimal:
        return from_units(await self._redis.get(keys.client_balance(client)) or 0)

    async def history(self, client: str) -> list[Entry]:
        return [_entry(i, raw) for i, raw in
                await self._redis.xrange(keys.client_ledger(client)) or []]

    async def recent(self, client: str, count: int) -> list[Entry]:
        """The client's latest `count` entries, newest first."""
        return [_entry(i, raw) for i, raw in
                await self._redis.xrevrange(keys.client_ledger(client), count=count) or []]

    async def check(self, client: str) -> tuple[Decimal, Decimal]:
        """(balance, sum of ledger entries): equal unless something bypassed the ledger."""
        entries = await self.history(client)
        return await self.balance(client), sum((e.amount for e in entries), Decimal(0))


def _entry(entry_id: Any, raw: Any) -> Entry:
    f = {text(k): text(v) for k, v in (raw or {}).items()}
    return Entry(id=text(entry_id or ""), type=f["type"], amount=from_units(f["amount"]),
                 balance=from_units(f["balance"]), order=f.get("order", ""),
                 note=f.get("note", ""), t=float(f.get("t", 0)))
