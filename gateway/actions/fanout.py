"""One call per provider (in chunks of MULTI_LIMIT ids), all at once, for the
actions that name orders held by several providers: status, refill,
refill_status, cancel. A provider whose breaker is open is not called: its ids
get `Unavailable` (reads then answer from the stored record)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from gateway.errors import ProviderError, Unavailable
from gateway.state.breakers import Breakers
from gateway.upstream.client import MULTI_LIMIT, ProviderClient

log = logging.getLogger("gateway.actions")

T = TypeVar("T")
R = TypeVar("R")

Results = dict[tuple[str, T], R | ProviderError]


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class FanOut:
    def __init__(self, providers: Mapping[str, ProviderClient], breakers: Breakers) -> None:
        self._providers = providers
        self._breakers = breakers

    async def __call__(
        self, groups: Mapping[str, Sequence[T]],
        call: Callable[[ProviderClient, Sequence[T]], Awaitable[Mapping[T, R]]],
    ) -> Results[T, R]:
        """`call` per provider; answers keyed by (provider, upstream id), since two
        providers may hand out the same id. A provider that fails as a whole yields
        its ProviderError for each of its ids, and counts against its breaker."""
        async def one(name: str, ids: Sequence[T]) -> Results[T, R]:
            if await self._breakers.is_open(name):
                skipped = Unavailable("breaker open")
                return {(name, i): skipped for i in ids}
            try:
                answer = await call(self._providers[name], ids)
            except ProviderError as exc:
                log.warning("provider call failed", extra={
                    "provider": name, "error": exc.message, "raw": exc.raw})
                await self._breakers.failure(name)
                return {(name, i): exc for i in ids}
            await self._breakers.success(name)
            return {(name, i): r for i, r in answer.items()}

        merged: Results[T, R] = {}
        for part in await asyncio.gather(*(one(name, chunk) for name, ids in groups.items()
                                           for chunk in _chunks(ids, MULTI_LIMIT))):
            merged.update(part)
        return merged
