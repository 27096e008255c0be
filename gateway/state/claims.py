"""At-most-once claims for `add`: an Idempotency-Key, or the duplicate-order window.

The first request with a token claims it (SET NX) and later stores its answer;
a concurrent request with the same token waits for that answer (up to
IN_FLIGHT_WAIT_S) and gets the same bytes back.
"""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec

from gateway.clock import SYSTEM, Clock
from gateway.errors import ClientError
from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors

IDEMPOTENCY_TTL_S = 24 * 3600
IN_FLIGHT_WAIT_S = 10.0
POLL_S = 0.05


class Answer(msgspec.Struct, array_like=True):
    fingerprint: str
    done: bool = False
    status: int = 200
    body: bytes = b""


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Answer)


@maps_redis_errors
class Claims:
    """At most one `add` per token: the first claims it, the rest get its answer."""

    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM) -> None:
        self._redis = redis
        self._clock = clock

    async def claim(self, client: str, token: str, fingerprint: str,
                    ttl_s: float) -> Answer | None:
        """None: this request owns the token. Otherwise the first request's answer."""
        key = keys.once(client, token)
        if await self._redis.set(key, _enc.encode(Answer(fingerprint)), nx=True,
                                 px=int(ttl_s * 1000)):
            return None
        deadline = self._clock.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            raw = await self._redis.get(key)
            if raw is None:  # the first one failed and let go: take it
                return await self.claim(client, token, fingerprint, ttl_s)
            answer = _dec.decode(cast(bytes, raw))
            if answer.fingerprint != fingerprint:
                raise ClientError("Idempotency-Key was already used with a different request")
            if answer.done:
                return answer
            if self._clock.monotonic() > deadline:
                raise ClientError("A request with the same Idempotency-Key is still in "
                                  "progress, try again later")
            await asyncio.sleep(POLL_S)

    async def finish(self, client: str, token: str, answer: Answer, ttl_s: float) -> None:
        await self._redis.set(keys.once(client, token), _enc.encode(answer),
                              px=int(ttl_s * 1000))

    async def release(self, client: str, token: str) -> None:
        await self._redis.delete(keys.once(client, token))
