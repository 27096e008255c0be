"""How a provider is called: one client per upstream, with its retry policy.

Reads (`services`, `status`, `refill_status`, `balance`) retry with exponential
backoff and jitter on transport errors, 5xx and 429, honouring `Retry-After`.
Writes (`add`, `refill`, `cancel`) are retried only when the connection was
never made; once a write may have reached the provider it is never sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from gateway import metrics
from gateway.config import ProviderSettings
from gateway.errors import Ambiguous, BadAnswer, Rejected, Unavailable, Unreachable
from gateway.models import ItemError, UpstreamService, UpstreamStatus
from gateway.upstream import dialect
from gateway.upstream.transport import Transport, make_transport

log = logging.getLogger("gateway.upstream")

T = TypeVar("T")

READ_ATTEMPTS = 3
FIRST_BACKOFF_S = 0.1
WRITE_ATTEMPTS = 2
MAX_BACKOFF_S = 5.0
MULTI_LIMIT = 100

_backoff = wait_exponential_jitter(multiplier=0.1, max=MAX_BACKOFF_S, jitter=0.2)


def _first_wait(exc: BaseException) -> float:
    """The wait before the second attempt: the server's Retry-After, or a jittered start."""
    if isinstance(exc, Unavailable) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_BACKOFF_S)
    return FIRST_BACKOFF_S * (1 + random.random())


def _wait(state: RetryCallState) -> float:
    """Backoff with jitter, or the server's Retry-After when it gave one (capped)."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, Unavailable) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_BACKOFF_S)
    return float(_backoff(state))


class ProviderClient:
    """Speaks SMM API v2 to one upstream. Owns its transport; `aclose()` releases it."""

    def __init__(self, settings: ProviderSettings, transport: Transport) -> None:
        self.name = settings.name
        self.currency = settings.currency
        self._key_field = urlencode({"key": settings.key}).encode() + b"&"  # encoded once
        self._timeout_s = settings.timeout_s
        self._transport = transport
        self._gate = asyncio.Semaphore(settings.max_concurrency)

    @classmethod
    def from_settings(cls, settings: ProviderSettings, transport: str) -> ProviderClient:
        return cls(settings, make_transport(
            transport, settings.url, settings.timeout_s, settings.max_concurrency))

    def release_idle(self) -> None:
        """Close idle keep-alive connections to this provider (after a burst)."""
        self._transport.release_idle()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # --- the wire ------------------------------------------------------------

    async def _once(self, fields: dict[str, str]) -> Any:
        body = self._key_field + urlencode(fields).encode()
        async with self._gate:
            with metrics.upstream(self.name, fields["action"]):
                raw = await self._transport.post_form(body)
                return dialect.decode(raw.status, raw.body, raw.headers)

    async def _read(self, fields: dict[str, str]) -> Any:
        try:  # the common case pays for no retry machinery
            return await self._once(fields)
        except (Unreachable, Ambiguous, Unavailable) as exc:
            await asyncio.sleep(_first_wait(exc))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((Unreachable, Ambiguous, Unavailable)),
            stop=stop_after_attempt(READ_ATTEMPTS - 1) | stop_after_delay(self._timeout_s * 2),
            wait=_wait,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(fields)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, fields: dict[str, str]) -> Any:
        try:  # the common case pays for no retry machinery
            return await self._once_write(fields)
        except Unreachable as exc:
            await asyncio.sleep(_first_wait(exc))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Unreachable),
            stop=stop_after_attempt(WRITE_ATTEMPTS - 1),
            wait=_wait,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once_write(fields)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once_write(self, fields: dict[str, str]) -> Any:
        try:
            return await self._once(fields)
        except Unavailable as exc:
            # a 5xx to a write may still have created it: never resend
            raise Ambiguous(exc.message, exc.raw) from exc

    # --- actions -------------------------------------------------------------

    async def services(self) -> list[UpstreamService]:
        return dialect.services(await self._read({"action": "services"}))

    async def balance(self) -> tuple[Decimal, str]:
        amount, currency = dialect.balance(await self._read({"action": "balance"}))
        return amount, currency or self.currency

    async def add(self, fields: dict[str, str]) -> str:
        """Place an order; the upstream order id. Raises Rejected/Unreachable/Ambiguous."""
        try:
            return dialect.add(await self._write({"action": "add", **fields}))
        except BadAnswer as exc:
            # it answered, but not with an order id we can read: it may exist
            raise Ambiguous(exc.message, exc.raw) from exc

    async def _per_id(self, ids: Sequence[str], one: Callable[[str], Awaitable[T]],
                      many: Callable[[str], Awaitable[dict[str, T | ItemError]]],
                      ) -> dict[str, T | ItemError]:
        """One id with the single form, several with the multi form; a rejection of
        the whole call becomes that message for each id."""
        try:
            if len(ids) == 1:
                return {ids[0]: await one(ids[0])}
            return await many(",".join(ids))
        except Rejected as exc:
            return {i: ItemError(exc.message) for i in ids}

    async def status(self, ids: Sequence[str]) -> dict[str, UpstreamStatus | ItemError]:
        """Statuses of up to MULTI_LIMIT upstream order ids, in one call."""
        async def one(i: str) -> UpstreamStatus:
            return dialect.status_one(await self._read({"action": "status", "order": i}))

        async def many(joined: str) -> dict[str, UpstreamStatus | ItemError]:
            return dialect.status_many(await self._read({"action": "status", "orders": joined}))

        return await self._per_id(ids, one, many)

    async def refill(self, ids: Sequence[str]) -> dict[str, str | ItemError]:
        async def one(i: str) -> str:
            return dialect.refill_one(await self._write({"action": "refill", "order": i}))

        async def many(joined: str) -> dict[str, str | ItemError]:
            return dialect.refill_many(
                await self._write({"action": "refill", "orders": joined}))

        return await self._per_id(ids, one, many)

    async def refill_status(self, ids: Sequence[str]) -> dict[str, str | ItemError]:
        async def one(i: str) -> str:
            return dialect.refill_status_one(
                await self._read({"action": "refill_status", "refill": i}))

        async def many(joined: str) -> dict[str, str | ItemError]:
            return dialect.refill_status_many(
                await self._read({"action": "refill_status", "refills": joined}))

        return await self._per_id(ids, one, many)

    async def cancel(self, ids: Sequence[str]) -> dict[str, bool | ItemError]:
        """Always the multi form (`orders`): the single `cancel` differs between dialects."""
        try:
            return dialect.cancel_many(
                await self._write({"action": "cancel", "orders": ",".join(ids)}))
        except Rejected as exc:
            return {i: ItemError(exc.message) for i in ids}
