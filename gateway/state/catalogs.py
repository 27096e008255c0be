"""Upstream service lists as cached for every replica, the rates the gateway last
published, and the gateway ids of mirrored services (given once, kept for ever)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import cast

import msgspec

from gateway.models import CatalogEntry
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors, text

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(CatalogEntry)


@maps_redis_errors
class Catalogs:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._mirror_id = redis.register_script(scripts.MIRROR_ID)

    async def get(self, provider: str) -> CatalogEntry | None:
        value = await self._redis.get(keys.catalog(provider))
        return _dec.decode(cast(bytes, value)) if value is not None else None

    async def put(self, provider: str, entry: CatalogEntry) -> None:
        await self._redis.set(keys.catalog(provider), _enc.encode(entry))

    async def published_rates(self) -> dict[int, Decimal]:
        raw = await self._redis.hgetall(keys.PUBLISHED_RATES)
        return {int(k): Decimal(text(v)) for k, v in raw.items()}

    async def publish_rates(self, rates: Mapping[int, Decimal]) -> None:
        await self._redis.hset(keys.PUBLISHED_RATES,
                               mapping={str(k): str(v) for k, v in rates.items()})

    async def confirm_rate(self, service_id: int) -> bool:
        """Forget the confirmed rate: the next rebuild publishes the computed one."""
        return bool(await self._redis.hdel(keys.PUBLISHED_RATES, str(service_id)))

    async def mirror_ids(self) -> dict[str, int]:
        raw = await self._redis.hgetall(keys.MIRROR_IDS)
        return {text(k): int(v) for k, v in raw.items()}

    async def mirror_id(self, field: str, first_id: int) -> int:
        """The gateway id of `provider:upstream id`, allocated on first sight."""
        return int(await self._mirror_id(keys=[keys.MIRROR_IDS, keys.MIRROR_SEQ],
                                         args=[field, first_id]))
