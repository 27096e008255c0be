"""The counters that hand out order and refill ids.

Ids come from shared counters (INCRBY), so they are unique across replicas; order
ids are taken ID_BLOCK at a time per process.

No id twice after a rollback: a failover to a replica that missed the last writes,
or a Redis restarted from an older file, can put a counter below ids already handed
out. This process remembers the highest id of each counter it handed out, and the
replication id of the server it took them from (read with each INCRBY). When a
counter answers below that id, or the replication id changed (also `moved()`, from
`gateway.state.durability`), the counter is raised ROLLBACK_GAP past both that id
and where it stands before more ids are taken (the gap clears the blocks other
replicas took from the old server). A journal replay raises the order counter past
every id it puts back (`floor`).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, RedisCluster, maps_redis_errors

log = logging.getLogger("gateway.orders")

ID_BLOCK = 16  # order ids a process takes from the counter at once
ROLLBACK_GAP = 10_000  # how far past the ids handed out a counter found behind is raised


@maps_redis_errors
class Ids:
    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self._floor = redis.register_script(scripts.FLOOR)
        self._block: list[int] = []
        self._lock = asyncio.Lock()
        self._highest = {keys.ORDER_SEQ: 0, keys.REFILL_SEQ: 0}  # handed out by this process
        self._behind = False  # the server changed: raise the counters before the next take
        self._replid = ""  # the replication id of the server of the last take

    async def next_order_id(self) -> int:
        """The next order id, from this process's block (a new block when it is used
        up). Ids never go backwards in one process; a restart leaves the rest of its
        block unused."""
        async with self._lock:
            if not self._block:
                last = await self._take(keys.ORDER_SEQ, ID_BLOCK)
                self._block = list(range(last, last - ID_BLOCK, -1))
            return self._block.pop()

    async def take(self, seq: str, count: int) -> list[int]:
        """`count` ids of the counter `seq` at once (refills)."""
        if count == 0:
            return []
        last = await self._take(seq, count)
        return list(range(last - count + 1, last + 1))

    async def floor(self, seq: str, at_least: int) -> None:
        """The next id of `seq` is above `at_least` (an id known to be handed out)."""
        await self._floor(keys=[seq], args=[at_least])

    def moved(self) -> None:
        """Another server answers at the address (its replication id changed): the
        rest of the id block is dropped and the counters raised before the next take."""
        self._block.clear()
        self._behind = True

    async def _take(self, seq: str, count: int) -> int:
        """`count` ids from the counter `seq`: the last of them, above every id this
        process handed out before."""
        if self._behind:
            await self._raise_past_highest()
        last = await self._incr_here(seq, count)
        if self._behind:  # the server is another since this process last took ids
            await self._raise_past_highest()
            last = int(await self.redis.incrby(seq, count))
        elif last - count < self._highest[seq]:
            log.error("redis: an id counter went back (lost writes): raised past it",
                      extra={"counter": seq, "counter_at": last - count,
                             "handed_out": self._highest[seq]})
            await self._floor(keys=[seq], args=[self._highest[seq] + ROLLBACK_GAP])
            last = int(await self.redis.incrby(seq, count))
        self._highest[seq] = max(self._highest[seq], last)
        return last

    async def _incr_here(self, seq: str, count: int) -> int:
        """INCRBY, with the server's replication id read in the same round trip: a new
        one (a failover, a restart from an older file) means ids handed out before
        may be above the counter, whatever this process has seen of it."""
        if isinstance(self.redis, RedisCluster):
            return int(await self.redis.incrby(seq, count))
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("replication")
        pipe.incrby(seq, count)
        info, last = await pipe.execute()
        replid = str(info.get("master_replid", ""))
        if self._replid and replid != self._replid:
            log.warning("redis: another server hands out ids (its replication id changed)",
                        extra={"counter": seq})
            self._behind = True
        self._replid = replid
        return int(last)

    async def _raise_past_highest(self) -> None:
        """Every counter past the ids handed out before the server changed: past this
        process's highest and past where the counter stands, by ROLLBACK_GAP (the
        ids other replicas handed out from blocks the new server never saw)."""
        for seq, highest in self._highest.items():
            current = int(await self.redis.get(seq) or 0)
            await self._floor(keys=[seq], args=[max(highest, current) + ROLLBACK_GAP])
        self._behind = False
