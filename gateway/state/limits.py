"""Limits shared by every replica through Redis: per-client rate limits and failed
authentication per client address."""

from __future__ import annotations

from gateway.clock import SYSTEM, Clock
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

AUTH_FAILURES = 20  # per client address per window, then every request is refused
AUTH_WINDOW_S = 60
_KNOWN_MAX = 4096  # addresses remembered per process (blocked, or seen not blocked)
CLEAR_S = 1.0  # how long "not blocked" is believed here: a block set elsewhere applies
# on this replica within that time, and the common request pays no Redis round trip


@maps_redis_errors
class RateLimiter:
    """Per-client token buckets, and the failed-authentication block per address.

    The block is a Redis key with a TTL (`keys.auth_block`), set by whichever
    replica counts the failure over the limit and checked by every replica on
    every request. A replica remembers a block it has seen until the key's own
    expiry (a block is never lifted early, so that memory stays right). That an
    address is *not* blocked is believed for CLEAR_S only, so a block another
    replica sets applies here within CLEAR_S; a block this replica sets applies
    at once.
    """

    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._redis = redis
        self._clock = clock
        self._bucket = redis.register_script(scripts.TOKEN_BUCKET)
        self._failed = redis.register_script(scripts.AUTH_FAILED)
        self._blocked: dict[str, float] = {}  # address -> monotonic end of its block
        self._clear: dict[str, float] = {}  # address -> monotonic end of "not blocked"

    async def check(self, client: str, rate: float, burst: int | None) -> None:
        size = burst if burst is not None else max(1, int(rate))
        allowed = await self._bucket(keys=[keys.client_rate(client)],
                                     args=[rate, size, int(self._clock.time() * 1000)])
        if not allowed:
            raise TooManyRequests()

    async def refuse_blocked(self, address: str) -> None:
        """Refuse a client address that failed authentication too often (on any replica)."""
        until = self._blocked.get(address)
        if until is not None:
            if until > self._clock.monotonic():
                raise TooManyRequests()
            del self._blocked[address]
        if self._clear.get(address, 0.0) > self._clock.monotonic():
            return
        try:
            ttl_ms = await self._block_ttl(address)
        except StoreUnavailable:
            # Redis is down: nothing can be counted either, and an unknown key cannot be
            # looked up (that answers 503), so guessing learns nothing; a known key may
            # still be answered from memory
            return
        if ttl_ms > 0 or ttl_ms == -1:  # -1: no expiry (set by hand): blocked, not cached
            if ttl_ms > 0:
                self._remember(address, ttl_ms / 1000)
            raise TooManyRequests()
        self._clear[address] = self._clock.monotonic() + CLEAR_S
        if len(self._clear) > _KNOWN_MAX:
            self._clear.clear()

    async def _block_ttl(self, address: str) -> int:
        """Milliseconds left of the address's block; -2 when there is none."""
        return int(await self._redis.pttl(keys.auth_block(address)))

    async def failed_auth(self, address: str) -> None:
        """Count a failed authentication; past the limit, block the address everywhere
        for AUTH_WINDOW_S and raise TooManyRequests."""
        count = await self._failed(keys=[keys.auth_count(address), keys.auth_block(address)],
                                   args=[AUTH_WINDOW_S, AUTH_FAILURES])
        self._clear.pop(address, None)
        if int(count) > AUTH_FAILURES:
            self._remember(address, AUTH_WINDOW_S)
            raise TooManyRequests()

    def _remember(self, address: str, seconds: float) -> None:
        if len(self._blocked) >= _KNOWN_MAX:
            now = self._clock.monotonic()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            if len(self._blocked) >= _KNOWN_MAX:
                self._blocked.clear()
        self._blocked[address] = self._clock.monotonic() + seconds
