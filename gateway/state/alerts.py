"""Alerts in Redis: which replica sends each one, and the recent ones for the dashboard.

An alert is sent by the replica that claims its identity (`keys.alert_once`, SET NX
with a TTL); the claim and the entry in the recent list (`keys.ALERTS_RECENT`, newest
first, KEEP entries) are one script. Alerts about Redis itself never come here
to be claimed (`gateway.alerts`); they are listed once Redis is back.
"""

from __future__ import annotations

import math

import msgspec

from gateway.events import AlertPayload
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

KEEP = 200

_dec = msgspec.json.Decoder(AlertPayload)


@maps_redis_errors
class AlertLog:
    def __init__(self, redis: AnyRedis, keep: int = KEEP) -> None:
        self._redis = redis
        self._keep = keep
        self._claim = redis.register_script(scripts.ALERT_CLAIM)

    async def claim(self, identity: str, ttl_s: float, payload: bytes) -> bool:
        """True if this caller is the one to send the alert (and it is now listed);
        False if a replica already did within `ttl_s`."""
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        return bool(await self._claim(keys=[keys.alert_once(identity), keys.ALERTS_RECENT],
                                      args=[ttl_ms, payload, self._keep]))

    async def record(self, payload: bytes) -> None:
        """List an alert that was sent without a claim (one about Redis itself)."""
        await self._claim(keys=[keys.alert_once("-"), keys.ALERTS_RECENT],
                          args=[0, payload, self._keep])

    async def forget(self, identity: str) -> None:
        """Drop a claim: the same alert may be sent again at once."""
        await self._redis.delete(keys.alert_once(identity))

    async def recent(self, limit: int = 50) -> list[AlertPayload]:
        """The latest alerts, newest first (at most `limit`, and KEEP are kept)."""
        if limit <= 0:
            return []
        raw = await self._redis.lrange(keys.ALERTS_RECENT, 0, limit - 1)
        return [_dec.decode(item) for item in raw]
