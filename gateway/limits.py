"""Limits shared by every replica through Redis: per-client rate limits, failed
authentication per source address, and at-most-once claims for `add`
(Idempotency-Key and the duplicate-order window)."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import msgspec

from gateway import keys
from gateway.errors import ClientError
from gateway.store import AnyRedis

AUTH_FAILURES = 20  # per source address per window, then every request is refused
AUTH_WINDOW_S = 60
IDEMPOTENCY_TTL_S = 24 * 3600
IN_FLIGHT_WAIT_S = 10.0

# KEYS: bucket. ARGV: rate per second, burst, now in ms. 1 = allowed.
_BUCKET = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class TooManyRequests(ClientError):
    status_code = 429

    def __init__(self) -> None:
        super().__init__("Too many requests")


class RateLimiter:
    def __init__(self, redis: AnyRedis) -> None:
        self._bucket = redis.register_script(_BUCKET)
        self._count = redis.register_script(_COUNT)
        self._blocked: dict[str, float] = {}

    async def check(self, client: str, rate: float, burst: int | None) -> None:
        size = burst if burst is not None else max(1, int(rate))
        allowed = await self._bucket(keys=[keys.client_rate(client)],
                                     args=[rate, size, int(time.time() * 1000)])
        if not allowed:
            raise TooManyRequests()

    def refuse_blocked(self, address: str) -> None:
        """Refuse a source address that failed authentication too often (known here)."""
        until = self._blocked.get(address)
        if until is not None:
            if until > time.monotonic():
                raise TooManyRequests()
            del self._blocked[address]

    async def failed_auth(self, address: str) -> None:
        """Count a failed authentication; raise TooManyRequests once over the limit."""
        count = await self._count(keys=[keys.auth_failures(address)], args=[AUTH_WINDOW_S])
        if int(count) > AUTH_FAILURES:
            self._blocked[address] = time.monotonic() + AUTH_WINDOW_S
            raise TooManyRequests()


class Answer(msgspec.Struct, array_like=True):
    fingerprint: str
    done: bool = False
    status: int = 200
    body: bytes = b""


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Answer)


class Claims:
    """At most one `add` per token: the first claims it, the rest get its answer."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def claim(self, client: str, token: str, fingerprint: str,
                    ttl_s: float) -> Answer | None:
        """None: this request owns the token. Otherwise the first request's answer."""
        key = keys.once(client, token)
        if await self._redis.set(key, _enc.encode(Answer(fingerprint)), nx=True,
                                 px=int(ttl_s * 1000)):
            return None
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            raw = await self._redis.get(key)
            if raw is None:  # the first one failed and let go: take it
                return await self.claim(client, token, fingerprint, ttl_s)
            answer = _dec.decode(cast(bytes, raw))
            if answer.fingerprint != fingerprint:
                raise ClientError("Idempotency-Key was already used with a different request")
            if answer.done:
                return answer
            if time.monotonic() > deadline:
                raise ClientError("A request with the same Idempotency-Key is still in "
                                  "progress, try again later")
            await asyncio.sleep(0.05)

    async def finish(self, client: str, token: str, answer: Answer, ttl_s: float) -> None:
        await self._redis.set(keys.once(client, token), _enc.encode(answer),
                              px=int(ttl_s * 1000))

    async def release(self, client: str, token: str) -> None:
        await self._redis.delete(keys.once(client, token))
