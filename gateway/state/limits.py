"""Limits shared by every replica through Redis: per-client rate limits and failed
authentication per client address."""

from __future__ import annotations

from gateway.clock import SYSTEM, Clock
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors

AUTH_FAILURES = 20  # per client address per window, then every request is refused
AUTH_WINDOW_S = 60
_KNOWN_MAX = 4096  # blocked addresses remembered per process


@maps_redis_errors
class RateLimiter:
    """Per-client token buckets, and the failed-authentication block per address.

    An authentication is decided in one step in Redis (`attempt`, script
    AUTH_ATTEMPT): refused while the address is blocked, whatever the key; a wrong
    key counted, and the one past AUTH_FAILURES blocks the address for
    AUTH_WINDOW_S (`keys.auth_block`) and is refused too. However many attempts run
    at once, on however many replicas, at most AUTH_FAILURES wrong keys per window
    are answered as wrong, and none is answered once the block is set.

    A replica remembers a block it has seen until the key's own expiry (a block is
    never lifted early, so that memory stays right): `refuse_known` refuses such an
    address with no round trip, before its request is read or its key looked up.
    """

    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._redis = redis
        self._clock = clock
        self._bucket = redis.register_script(scripts.TOKEN_BUCKET)
        self._attempt = redis.register_script(scripts.AUTH_ATTEMPT)
        self._blocked: dict[str, float] = {}  # address -> monotonic end of its block

    async def check(self, client: str, rate: float, burst: int | None) -> None:
        size = burst if burst is not None else max(1, int(rate))
        allowed = await self._bucket(keys=[keys.client_rate(client)],
                                     args=[rate, size, int(self._clock.time() * 1000)])
        if not allowed:
            raise TooManyRequests()

    def refuse_known(self, address: str) -> None:
        """Refuse an address this replica knows to be blocked (no round trip)."""
        until = self._blocked.get(address)
        if until is None:
            return
        if until > self._clock.monotonic():
            raise TooManyRequests()
        del self._blocked[address]

    async def attempt(self, address: str, right: bool) -> None:
        """One authentication from `address`, its key already compared (`right`):
        returns when the key's verdict may be answered, raises TooManyRequests when
        the address is (or this wrong key makes it) blocked."""
        try:
            left_ms = await self._decide(address, right)
        except StoreUnavailable:
            if not right:
                raise  # a wrong key that cannot be counted is not answered
            # Redis is down: no block can be read, and none can be set either (nothing
            # is counted), so a right key (looked up from memory) is answered
            return
        if left_ms == 0:
            return
        if left_ms > 0:  # -1: a block without expiry (set by hand): refused, not remembered
            self._remember(address, left_ms / 1000)
        raise TooManyRequests()

    async def _decide(self, address: str, right: bool) -> int:
        return int(await self._attempt(
            keys=[keys.auth_count(address), keys.auth_block(address)],
            args=[AUTH_WINDOW_S, AUTH_FAILURES, "0" if right else "1"]))

    async def refuse_blocked(self, address: str) -> None:
        """Refuse a blocked address before its key is known: one this replica
        remembers (no round trip), else one Redis has blocked (a block another replica
        set applies at once). A right key is refused here only if the block was set
        before this check; `authenticate` decides it after the lookup instead."""
        self.refuse_known(address)
        try:
            left_ms = await self._block_left(address)
        except StoreUnavailable:
            # Redis is down: nothing can be counted either, and an unknown key cannot be
            # looked up (that answers 503), so guessing learns nothing; a known key may
            # still be answered from memory
            return
        if left_ms > 0 or left_ms == -1:  # -1: no expiry (set by hand): blocked, not kept
            if left_ms > 0:
                self._remember(address, left_ms / 1000)
            raise TooManyRequests()

    async def _block_left(self, address: str) -> int:
        """Milliseconds left of the address's block; -2 when there is none."""
        return int(await self._redis.pttl(keys.auth_block(address)))

    async def failed_auth(self, address: str) -> None:
        """A wrong key from `address` (`attempt` with right=False)."""
        await self.attempt(address, right=False)

    def _remember(self, address: str, seconds: float) -> None:
        if len(self._blocked) >= _KNOWN_MAX:
            now = self._clock.monotonic()
            self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            if len(self._blocked) >= _KNOWN_MAX:
                self._blocked.clear()
        self._blocked[address] = self._clock.monotonic() + seconds
