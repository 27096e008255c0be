"""Limits shared by every replica through Redis: per-client rate limits and failed
authentication per source address."""

from __future__ import annotations

from gateway.clock import SYSTEM, Clock
from gateway.errors import TooManyRequests
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

AUTH_FAILURES = 20  # per source address per window, then every request is refused
AUTH_WINDOW_S = 60


@maps_redis_errors
class RateLimiter:
    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._clock = clock
        self._bucket = redis.register_script(scripts.TOKEN_BUCKET)
        self._count = redis.register_script(scripts.COUNT_IN_WINDOW)
        self._blocked: dict[str, float] = {}

    async def check(self, client: str, rate: float, burst: int | None) -> None:
        size = burst if burst is not None else max(1, int(rate))
        allowed = await self._bucket(keys=[keys.client_rate(client)],
                                     args=[rate, size, int(self._clock.time() * 1000)])
        if not allowed:
            raise TooManyRequests()

    async def refuse_blocked(self, address: str) -> None:
        """Refuse a source address that failed authentication too often (known here)."""
        until = self._blocked.get(address)
        if until is not None:
            if until > self._clock.monotonic():
                raise TooManyRequests()
            del self._blocked[address]

    async def failed_auth(self, address: str) -> None:
        """Count a failed authentication; raise TooManyRequests once over the limit."""
        count = await self._count(keys=[keys.auth_failures(address)], args=[AUTH_WINDOW_S])
        if int(count) > AUTH_FAILURES:
            self._blocked[address] = self._clock.monotonic() + AUTH_WINDOW_S
            raise TooManyRequests()
