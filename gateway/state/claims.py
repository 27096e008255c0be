"""At-most-once claims for `add`: an Idempotency-Key, or the duplicate-order window.

A claim is a hash: the answer (first the request's fingerprint and the order id
it will use, later the answer itself), its owner and the owner's lease. The
first request with a token takes it; a concurrent one waits for the answer (up
to IN_FLIGHT_WAIT_S) and gets the same bytes back.

The owner renews its lease while it works (`Lease`). When an owner dies, its
lease lapses and a retry learns the order id the dead owner was using
(`Lapsed`): the caller answers from that order's record, or, when the order
provably never went out, takes the claim over (`take_over`). A claim is never
left "in progress" for its whole time to live.

A claim is taken (and taken over) with the durability barrier in force
(`gateway.state.durability`) in the same round trip: a claim that a failover could
lose would let a retry at another replica place the order again. When the barrier
is not met in time the claim is let go and the request answered as a Redis outage
is (try again later): nothing was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from gateway.clock import SYSTEM, Clock
from gateway.errors import ClientError, StoreUnavailable
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors, text
from gateway.state.durability import WRITTEN, Durability

IDEMPOTENCY_TTL_S = 24 * 3600
IN_FLIGHT_WAIT_S = 10.0
POLL_S = 0.05


class Answer(msgspec.Struct, array_like=True):
    fingerprint: str
    done: bool = False
    status: int = 200
    body: bytes = b""
    order: int | None = None  # the order id the owner uses


@dataclass(frozen=True, slots=True)
class Owned:
    """This request holds the claim."""

    owner: str


@dataclass(frozen=True, slots=True)
class Lapsed:
    """The owner's lease ran out before it answered: it is gone (or stuck)."""

    owner: str
    order: int | None


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Answer)


@maps_redis_errors
class Claims:
    """At most one `add` per token: the first claims it, the rest get its answer."""

    def __init__(self, redis: AnyRedis, clock: Clock = SYSTEM, lease_s: float = 30.0,
                 durability: Durability | None = None) -> None:
        self._redis = redis
        self._clock = clock
        self.lease_s = lease_s
        self._durability = durability
        self._claim = redis.register_script(scripts.CLAIM)
        self._owned = redis.register_script(scripts.CLAIM_OWNED)

    def _until(self) -> int:
        return int((self._clock.time() + self.lease_s) * 1000)

    async def claim(self, client: str, token: str, fingerprint: str, ttl_s: float,
                    order: int) -> Owned | Answer | Lapsed:
        """Owned: this request owns the token (to place `order`). Answer: the first
        request's answer. Lapsed: the owner's lease ran out without an answer."""
        key = keys.once(client, token)
        owner = secrets.token_hex(8)
        deadline = self._clock.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            held, durable = await self._durably(self._claim, [key], [
                _enc.encode(Answer(fingerprint, order=order)), owner, self._until(),
                max(1, int(ttl_s * 1000))])
            if held is None:
                return await self._kept(client, token, Owned(owner), durable)
            raw, holder, lease = held
            if raw is None:  # expired between the two looks: try again
                continue
            answer = _dec.decode(cast(bytes, raw))
            if answer.fingerprint != fingerprint:
                raise ClientError("Idempotency-Key was already used with a different request")
            if answer.done:
                return answer
            if int(text(lease or b"0")) < int(self._clock.time() * 1000):
                return Lapsed(text(holder or b""), answer.order)
            if self._clock.monotonic() > deadline:
                raise ClientError("A request with the same Idempotency-Key is still in "
                                  "progress, try again later")
            await asyncio.sleep(POLL_S)

    async def take_over(self, client: str, token: str, lapsed: Lapsed, fingerprint: str,
                        order: int) -> Owned | None:
        """Become the owner of a lapsed claim (to place `order`); None if another
        request did first, or the owner came back."""
        owner = secrets.token_hex(8)
        ok, durable = await self._durably(self._owned, [keys.once(client, token)], [
            lapsed.owner, "takeover", owner, _enc.encode(Answer(fingerprint, order=order)),
            self._until(), int(self._clock.time() * 1000)])
        return await self._kept(client, token, Owned(owner), durable) if ok else None

    async def _durably(self, script: Any, keys_: list[str], args: list[Any]) -> tuple[Any, bool]:
        """Run a claim script and the durability barrier in one round trip (on one
        connection: a barrier counts that connection's writes): its answer, and
        whether the barrier was met."""
        barrier = self._durability.barrier if self._durability is not None else WRITTEN
        if barrier.command is None:
            return await script(keys=keys_, args=args), True
        pipe = self._redis.pipeline(transaction=False)
        await script(keys=keys_, args=args, client=pipe)
        pipe.execute_command(*barrier.command)
        answer, acks = await pipe.execute()
        return answer, barrier.met(acks)

    async def _kept(self, client: str, token: str, owned: Owned, durable: bool) -> Owned:
        if not durable:  # a failover could lose it: give it back, send nothing
            await self.release(client, token, owned)
            raise StoreUnavailable("an idempotency claim not durable in time")
        return owned

    @contextlib.asynccontextmanager
    async def lease(self, client: str, token: str, owned: Owned) -> AsyncIterator[None]:
        """Renew the owner's lease every third of it while the body runs."""
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease_s / 3)
                with contextlib.suppress(Exception):  # a missed renewal is retried
                    await self._owned(keys=[keys.once(client, token)],
                                      args=[owned.owner, "renew", self._until()])

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def finish(self, client: str, token: str, owned: Owned, answer: Answer,
                     ttl_s: float) -> bool:
        """Store the answer; False if the claim is no longer this owner's."""
        return bool(await self._owned(keys=[keys.once(client, token)], args=[
            owned.owner, "finish", _enc.encode(answer), max(1, int(ttl_s * 1000))]))

    async def release(self, client: str, token: str, owned: Owned) -> None:
        await self._owned(keys=[keys.once(client, token)], args=[owned.owner, "release"])
