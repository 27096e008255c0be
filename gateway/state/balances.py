"""The last known balance of each upstream provider, shared by every replica."""

from __future__ import annotations

from typing import cast

import msgspec

from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(tuple[str, str, float])


@maps_redis_errors
class KnownBalances:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def get(self, provider: str) -> tuple[str, str, float] | None:
        """(amount, currency, fetched at) or None."""
        value = await self._redis.get(keys.balance(provider))
        return _dec.decode(cast(bytes, value)) if value is not None else None

    async def put(self, provider: str, amount: str, currency: str, at: float) -> None:
        await self._redis.set(keys.balance(provider), _enc.encode((amount, currency, at)))
