"""The gateway's state in Redis: order and refill records, id counters, caches.

Only this module talks to Redis; only `gateway.keys` names keys. Every call that
touches several records is one pipelined round trip. Nothing here does a
read-modify-write of a shared value from Python: counters are INCR, the
sequence floor is a Lua script.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway import keys
from gateway.models import CatalogEntry, OrderRecord, RefillRecord

R = TypeVar("R")

_order_enc = msgspec.msgpack.Encoder()
_order_dec = msgspec.msgpack.Decoder(OrderRecord)
_refill_dec = msgspec.msgpack.Decoder(RefillRecord)
_catalog_dec = msgspec.msgpack.Decoder(CatalogEntry)
_balance_dec = msgspec.msgpack.Decoder(tuple[str, str, float])

# Raise a counter to at least `start - 1` so the next INCR hands out >= start.
_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

CLUSTER_SCHEME = "redis+cluster://"
ID_BLOCK = 16  # order ids a process takes from the counter at once

AnyRedis = aioredis.Redis | RedisCluster


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client answers bytes; typing says either)."""
    return value.decode() if isinstance(value, bytes) else value


POOL_SIZE = 256
POOL_WAIT_S = 10.0


def connect(url: str, pool_size: int = POOL_SIZE) -> AnyRedis:
    """A client for `url`; `redis+cluster://host:port` opens a Redis Cluster client.

    The pool blocks (up to POOL_WAIT_S) when all its connections are busy rather
    than failing: under a burst of clients requests queue for a connection.
    """
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME):],
                                     max_connections=pool_size)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_WAIT_S)
    return aioredis.Redis(connection_pool=pool)


def _by_bucket(ids: Iterable[int], bucket: Callable[[int], str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i in ids:
        groups[bucket(i)].append(i)
    return groups


class Store:
    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self._floor = redis.register_script(_FLOOR)
        self._ids: list[int] = []
        self._id_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    async def set_sequence_floors(self, order_start: int, refill_start: int) -> None:
        await self._floor(keys=[keys.ORDER_SEQ], args=[order_start - 1])
        await self._floor(keys=[keys.REFILL_SEQ], args=[refill_start - 1])

    # --- orders --------------------------------------------------------------

    async def next_order_id(self) -> int:
        """The next id from the shared counter, taken ID_BLOCK at a time per process.

        Ids stay unique across replicas and never go backwards in one process; a
        restart leaves the rest of its block unused.
        """
        async with self._id_lock:
            if not self._ids:
                last = int(await self.redis.incrby(keys.ORDER_SEQ, ID_BLOCK))
                self._ids = list(range(last, last - ID_BLOCK, -1))
            return self._ids.pop()

    async def put_order(self, order_id: int, record: OrderRecord) -> None:
        await self.put_orders({order_id: record})

    async def put_orders(self, records: Mapping[int, OrderRecord]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for order_id, record in records.items():
            pipe.hset(keys.order_bucket(order_id), str(order_id), _order_enc.encode(record))
            # in flight or ambiguous: listed by `orders unknown` until settled
            if record.state in ("dispatching", "unknown"):
                pipe.sadd(keys.UNKNOWN_ORDERS, order_id)
            else:
                pipe.srem(keys.UNKNOWN_ORDERS, order_id)
        await pipe.execute()

    async def get_orders(self, ids: Iterable[int]) -> dict[int, OrderRecord]:
        """Records of the given ids that exist, in one round trip."""
        return await self._get_records(ids, keys.order_bucket, _order_dec)

    async def unknown_orders(self) -> dict[int, OrderRecord]:
        ids = sorted(int(i) for i in await self.redis.smembers(keys.UNKNOWN_ORDERS))
        return await self.get_orders(ids)

    # --- refills -------------------------------------------------------------

    async def put_refills(self, records: Mapping[int, RefillRecord]) -> None:
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)
        for refill_id, record in records.items():
            pipe.hset(keys.refill_bucket(refill_id), str(refill_id), _order_enc.encode(record))
        await pipe.execute()

    async def new_refill_ids(self, count: int) -> list[int]:
        if count == 0:
            return []
        last = int(await self.redis.incrby(keys.REFILL_SEQ, count))
        return list(range(last - count + 1, last + 1))

    async def get_refills(self, ids: Iterable[int]) -> dict[int, RefillRecord]:
        return await self._get_records(ids, keys.refill_bucket, _refill_dec)

    async def _get_records(self, ids: Iterable[int], bucket: Callable[[int], str],
                           decoder: msgspec.msgpack.Decoder[R]) -> dict[int, R]:
        """One HMGET per bucket, all in one pipelined round trip."""
        groups = _by_bucket(ids, bucket)
        if not groups:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for name, members in groups.items():
            pipe.hmget(name, [str(i) for i in members])
        found: dict[int, R] = {}
        for members, values in zip(groups.values(), await pipe.execute(), strict=True):
            for record_id, value in zip(members, values, strict=True):
                if value is not None:
                    found[record_id] = decoder.decode(value)
        return found

    # --- provider caches -----------------------------------------------------

    async def get_catalog(self, provider: str) -> CatalogEntry | None:
        value = await self.redis.get(keys.catalog(provider))
        return _catalog_dec.decode(cast(bytes, value)) if value is not None else None

    async def put_catalog(self, provider: str, entry: CatalogEntry) -> None:
        await self.redis.set(keys.catalog(provider), _order_enc.encode(entry))

    async def published_rates(self) -> dict[int, Decimal]:
        raw = await self.redis.hgetall(keys.PUBLISHED_RATES)
        return {int(k): Decimal(text(v)) for k, v in raw.items()}

    async def publish_rates(self, rates: Mapping[int, Decimal]) -> None:
        await self.redis.hset(keys.PUBLISHED_RATES,
                              mapping={str(k): str(v) for k, v in rates.items()})

    async def confirm_rate(self, service_id: int) -> bool:
        """Forget the confirmed rate: the next rebuild publishes the computed one."""
        return bool(await self.redis.hdel(keys.PUBLISHED_RATES, str(service_id)))

    async def mirror_ids(self) -> dict[str, int]:
        raw = await self.redis.hgetall(keys.MIRROR_IDS)
        return {text(k): int(v) for k, v in raw.items()}

    async def try_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(key, token, nx=True, px=ttl_ms))

    async def get_balance(self, provider: str) -> tuple[str, str, float] | None:
        value = await self.redis.get(keys.balance(provider))
        return _balance_dec.decode(cast(bytes, value)) if value is not None else None

    async def put_balance(self, provider: str, amount: str, currency: str) -> None:
        await self.redis.set(keys.balance(provider),
                             _order_enc.encode((amount, currency, time.time())))
