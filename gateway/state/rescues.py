"""Order rescue state: which placed orders to look at when, and how far each got.

- `keys.RESCUE_DUE`, a sorted set: order id -> the unix time the rescue job looks at
  it next. Only orders of services with `rescue_after_s` are in it (added when they
  are placed, at placement + rescue_after_s), so the job reads the due ones with one
  ZRANGEBYSCORE and never scans the orders. An order that started or ended leaves
  it the next time the job sees it.
- `keys.rescue_bucket`, bucket hashes like the records: one `RescueRecord` per such
  order (the add request to send again, the providers tried, the phase, the
  operator's flag, the placements it left).

Phases (`gateway.actions.rescue` moves them; each is written before the step it
names is sent upstream, so a crash mid-step is seen by the next round):

    waiting --(not started, cancel sent)--> canceling --(Canceled, nothing
    delivered)--> replacing --(placed)--> waiting (or done) ; anything ambiguous
    --> stopped (flagged for the operator)
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import msgspec

from gateway.money import to_units
from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors, text
from gateway.state.locks import Locks
from gateway.state.stats import day_of

Phase = Literal["waiting", "canceling", "replacing", "stopped", "done"]


class Placement(msgspec.Struct, array_like=True, omit_defaults=True):
    """One upstream placement of an order that a rescue cancelled."""

    provider: str
    service: str  # the provider's service id
    upstream_id: str
    cost: Decimal
    outcome: str = ""  # what the provider said at the end ("Canceled")


class RescueRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    request: bytes  # the add request, as `gateway.actions.rescue` encodes it
    tried: list[str]  # providers this order was sent to, first the original one
    rescues: int = 0  # re-placements done
    phase: Phase = "waiting"
    since: int = 0  # unix time the phase began (the cancel was sent, the add was sent)
    current: Placement | None = None  # the placement being cancelled
    prior: list[Placement] = []  # placements a rescue cancelled, oldest first
    flag: str | None = None  # why the rescue stopped: the operator's to look at


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(RescueRecord)


@maps_redis_errors
class Rescues:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._locks = Locks(redis)

    async def lease(self, ttl_ms: int) -> str | None:
        """The rescue job's lease (a token) if this replica now holds it."""
        return await self._locks.acquire(keys.RESCUE_LOCK, ttl_ms)

    async def release(self, token: str) -> None:
        await self._locks.release(keys.RESCUE_LOCK, token)

    async def put(self, order_id: int, record: RescueRecord, due: float | None) -> None:
        """Store the order's rescue state; `due`: when to look at it next (None: never)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(keys.rescue_bucket(order_id), str(order_id), _enc.encode(record))
        if due is None:
            pipe.zrem(keys.RESCUE_DUE, order_id)
        else:
            pipe.zadd(keys.RESCUE_DUE, {str(order_id): due})
        await pipe.execute()

    async def postpone(self, order_id: int, due: float) -> None:
        await self._redis.zadd(keys.RESCUE_DUE, {str(order_id): due}, xx=True)

    async def forget(self, order_id: int) -> None:
        """An order that never needed rescuing: its state goes, and its due time."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(keys.rescue_bucket(order_id), str(order_id))
        pipe.zrem(keys.RESCUE_DUE, order_id)
        await pipe.execute()

    async def due(self, now: float, limit: int) -> list[int]:
        """Order ids due by `now`, the earliest first, at most `limit`."""
        raw = await self._redis.zrangebyscore(keys.RESCUE_DUE, "-inf", now, start=0,
                                              num=limit)
        return [int(text(i)) for i in raw if isinstance(i, (bytes, str))]

    async def get(self, ids: Iterable[int]) -> dict[int, RescueRecord]:
        """Rescue states of the given orders that have one (one round trip)."""
        ids = list(ids)
        if not ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.rescue_bucket(i), str(i))
        return {i: _dec.decode(v) for i, v in zip(ids, await pipe.execute(), strict=True)
                if v is not None}

    async def count_due(self) -> int:
        return int(await self._redis.zcard(keys.RESCUE_DUE))

    async def cost_moved(self, at: float, old: Decimal, new: Decimal) -> None:
        """The dashboard's day: the old placement's cost came back from its provider,
        the new one's is paid (the charge, counted when placed, stays)."""
        day = keys.stats_day(day_of(at))
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(day, "cost", to_units(new) - to_units(old))
        pipe.hincrby(day, "rescued", 1)
        await pipe.execute()
