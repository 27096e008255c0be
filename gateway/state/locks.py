"""Short leases that let one replica at a time do a job (refresh a list, a balance).

A lease is a key set with NX and a TTL holding a random token; it is released by
compare-and-delete, so a holder whose lease expired never frees another's.
"""

from __future__ import annotations

import secrets

from gateway.state import scripts
from gateway.state.connect import AnyRedis, maps_redis_errors


@maps_redis_errors
class Locks:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._release = redis.register_script(scripts.RELEASE)

    async def acquire(self, key: str, ttl_ms: int) -> str | None:
        """A token if this caller now holds `key`, else None."""
        token = secrets.token_hex(8)
        if await self._redis.set(key, token, nx=True, px=ttl_ms):
            return token
        return None

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])
