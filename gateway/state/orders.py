"""Order and refill records (their ids come from `gateway.state.ids`).

Records are msgpack structs in bucket hashes (`keys.order_bucket`); every call
that touches several records is one pipelined round trip.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import msgspec

from gateway.models import OrderRecord, RefillRecord
from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors, text
from gateway.state.durability import WRITTEN, Barrier, Durability
from gateway.state.ids import ID_BLOCK, ROLLBACK_GAP, Ids
from gateway.state.stats import Expiries, Tally, add_tally

R = TypeVar("R")
log = logging.getLogger("gateway.orders")
__all__ = ["ID_BLOCK", "ROLLBACK_GAP", "Orders"]


_enc = msgspec.msgpack.Encoder()
_order_dec = msgspec.msgpack.Decoder(OrderRecord)
_refill_dec = msgspec.msgpack.Decoder(RefillRecord)


def _by_bucket(ids: Iterable[int], bucket: Callable[[int], str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i in ids:
        groups[bucket(i)].append(i)
    return groups


@maps_redis_errors
class Orders:
    def __init__(self, redis: AnyRedis, durability: Durability | None = None) -> None:
        self.redis = redis
        self._durability = durability
        self.ids = Ids(redis)  # the id counters (`gateway.state.ids`)
        self._expiries = Expiries()
        self.store = ""  # this Redis's identity (`identity()`), once known

    @property
    def barrier(self) -> Barrier:
        """What a durable write waits for now (`gateway.state.durability`)."""
        return self._durability.barrier if self._durability is not None else WRITTEN

    async def identity(self) -> str:
        """The id of the data set in this Redis (kept in it, so a promoted replica has
        the same): made once by whoever asks first. The journal keeps it with each
        entry, and replays an entry only into the store it was written for."""
        await self.redis.set(keys.STORE_ID, secrets.token_hex(8), nx=True)
        self.store = text(await self.redis.get(keys.STORE_ID) or b"")
        return self.store

    async def set_sequence_floors(self, order_start: int, refill_start: int) -> None:
        await self.ids.floor(keys.ORDER_SEQ, order_start - 1)
        await self.ids.floor(keys.REFILL_SEQ, refill_start - 1)

    # --- orders --------------------------------------------------------------

    async def next_order_id(self) -> int:
        """The next id from the shared counter, taken ID_BLOCK at a time per process.

        Ids stay unique across replicas and never go backwards in one process; a
        restart leaves the rest of its block unused.
        """
        return await self.ids.next_order_id()

    async def create_order(self, order_id: int, record: OrderRecord) -> bool:
        """Write the first record of an order, unless one exists (False): an id is
        recorded once, so a replica that lost its claim can never send it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(keys.order_bucket(order_id), str(order_id), _enc.encode(record))
        if record.state in ("dispatching", "unknown"):
            pipe.sadd(keys.UNKNOWN_ORDERS, order_id)
        created, *_ = await pipe.execute()
        if not created:  # rare: set the listing right for the record that stands
            standing = (await self.get_orders([order_id])).get(order_id)
            if standing is not None and standing.state not in ("dispatching", "unknown"):
                await self.redis.srem(keys.UNKNOWN_ORDERS, order_id)
        return bool(created)

    async def put_order(self, order_id: int, record: OrderRecord,
                        settles: bool = False, tally: Tally | None = None,
                        durable: bool = False) -> bool:
        """Store one record; `tally`: count its outcome for the dashboard
        (`gateway.state.stats`) in the same round trip. `durable`: hold until the
        durability barrier is met; False when it was not in time (the record is in
        Redis, but may not survive a failover or a power cut)."""
        return await self.put_orders({order_id: record}, settles, tally, durable)

    async def put_orders(self, records: Mapping[int, OrderRecord],
                         settles: bool = False, tally: Tally | None = None,
                         durable: bool = False) -> bool:
        """Store records. `settles`: these records explain their reservations (the
        ledger's pending marks are cleared in the same round trip). A failed record
        explains nothing: its mark stays until the release clears it (the ledger's
        credit does, atomically), so a process killed between the two leaves the mark
        for the reconciler, never a charge that nothing will give back."""
        pipe = self.redis.pipeline(transaction=False)
        if tally is not None:
            for record in records.values():
                add_tally(pipe, tally, record, self._expiries)
        for order_id, record in records.items():
            pipe.hset(keys.order_bucket(order_id), str(order_id), _enc.encode(record))
            # in flight or ambiguous: listed by `orders unknown` until settled
            if record.state in ("dispatching", "unknown"):
                pipe.sadd(keys.UNKNOWN_ORDERS, order_id)
            else:
                pipe.srem(keys.UNKNOWN_ORDERS, order_id)
            if settles and record.ledger and record.state != "failed":
                pipe.hdel(keys.client_pending(record.client), str(order_id))
        barrier = self.barrier if durable else WRITTEN
        if barrier.command is not None:
            pipe.execute_command(*barrier.command)
        replies = await pipe.execute()
        return barrier.met(replies[-1] if barrier.command is not None else None)

    async def get_orders(self, ids: Iterable[int]) -> dict[int, OrderRecord]:
        """Records of the given ids that exist, in one round trip."""
        return await self._get_records(ids, keys.order_bucket, _order_dec)

    async def count_unknown(self) -> int:
        """How many orders `unknown_orders` would list (one SCARD)."""
        return int(await self.redis.scard(keys.UNKNOWN_ORDERS))

    async def unknown_orders(self) -> dict[int, OrderRecord]:
        ids = sorted(int(i) for i in await self.redis.smembers(keys.UNKNOWN_ORDERS))
        return await self.get_orders(ids)

    async def last_order_id(self) -> int:
        """The highest order id handed out so far (ids above it do not exist)."""
        return int(await self.redis.get(keys.ORDER_SEQ) or 0)

    async def buckets(self, numbers: Iterable[int]) -> dict[int, OrderRecord]:
        """Every record of the given buckets (order id // keys.BUCKET), one round trip:
        the dashboard's bounded search reads the newest buckets first."""
        numbers = list(numbers)
        if not numbers:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for n in numbers:
            pipe.hgetall(keys.order_bucket(n * keys.BUCKET))
        found: dict[int, OrderRecord] = {}
        for raw in await pipe.execute():
            for field, value in (raw or {}).items():
                found[int(field)] = _order_dec.decode(value)
        return found

    # --- refills -------------------------------------------------------------

    async def put_refills(self, records: Mapping[int, RefillRecord]) -> None:
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)
        for refill_id, record in records.items():
            pipe.hset(keys.refill_bucket(refill_id), str(refill_id), _enc.encode(record))
        await pipe.execute()

    async def new_refill_ids(self, count: int) -> list[int]:
        return await self.ids.take(keys.REFILL_SEQ, count)

    async def get_refills(self, ids: Iterable[int]) -> dict[int, RefillRecord]:
        return await self._get_records(ids, keys.refill_bucket, _refill_dec)

    async def _get_records(self, ids: Iterable[int], bucket: Callable[[int], str],
                           decoder: msgspec.msgpack.Decoder[R]) -> dict[int, R]:
        """One HMGET per bucket, all in one round trip (pipelined when more than one)."""
        groups = _by_bucket(ids, bucket)
        if not groups:
            return {}
        if len(groups) == 1:  # the common case (one order, or neighbours): no pipeline
            [(name, members)] = groups.items()
            replies: list[list[bytes | str | None]] = [
                await self.redis.hmget(name, [str(i) for i in members])]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for name, members in groups.items():
                pipe.hmget(name, [str(i) for i in members])
            replies = await pipe.execute()
        found: dict[int, R] = {}
        for members, values in zip(groups.values(), replies, strict=True):
            for record_id, value in zip(members, values, strict=True):
                if isinstance(value, bytes):  # (decode_responses is off: never str)
                    found[record_id] = decoder.decode(value)
        return found
