"""Last known upstream balances: shared through Redis, refreshed in the background.

Routing skips a candidate whose provider's last known balance cannot pay for the
order. One replica at a time refreshes a provider's balance (a lease in Redis);
the others read what it stored. A failed refresh keeps the last known amount.

A fetched balance under its `alerts.balance_below` threshold (in the provider's
own currency) is an alert, re-sent every `alerts.repeat_s` while it stays low and
at once after a top-up when it drops again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from decimal import Decimal

from gateway.clock import SYSTEM, Clock
from gateway.config import AlertSettings, GatewaySettings
from gateway.errors import GatewayError, ProviderError
from gateway.events import NOOP, Alert, Events
from gateway.money import Converter
from gateway.state import keys
from gateway.state.balances import KnownBalances
from gateway.state.breakers import Breakers
from gateway.state.locks import Locks
from gateway.upstream.client import ProviderClient

log = logging.getLogger("gateway.balances")

LEASE_MS = 10_000


class Balances:
    def __init__(self, store: KnownBalances, locks: Locks,
                 providers: Mapping[str, ProviderClient], settings: GatewaySettings,
                 clock: Clock = SYSTEM, breakers: Breakers | None = None, *,
                 events: Events = NOOP, alerts: AlertSettings | None = None) -> None:
        self._store = store
        self._events = events
        alerts = alerts or AlertSettings()
        self._below = dict(alerts.balance_below)  # provider -> threshold, its own currency
        self._repeat_s = alerts.repeat_s
        self._breakers = breakers
        self._locks = locks
        self._providers = providers
        self._s = settings
        self._clock = clock
        self._converter = Converter(settings)
        self.known: dict[str, tuple[Decimal, float]] = {}  # provider -> (amount, fetched at)
        self._task: asyncio.Task[None] | None = None

    def in_gateway_currency(self, provider: str) -> Decimal | None:
        hit = self.known.get(provider)
        if hit is None:
            return None
        return self._converter.to_gateway(hit[0], self._providers[provider].currency)

    async def refresh(self, provider: str) -> Decimal | None:
        """Ask the provider now; on failure, or while its breaker is open, keep (and
        return) the last known."""
        client = self._providers[provider]
        if self._breakers is not None and await self._breakers.is_open(provider):
            await self.load(provider)
            return self.known.get(provider, (None, 0.0))[0]
        try:
            amount, currency = await client.balance()
        except ProviderError as exc:
            log.warning("balance failed, using the last known",
                        extra={"provider": provider, "error": exc.message})
            await self.load(provider)
            return self.known.get(provider, (None, 0.0))[0]
        if currency != client.currency:
            # prices are read in the configured currency; balances follow suit
            log.warning("balance currency differs from the configured one",
                        extra={"provider": provider, "says": currency})
        now = self._clock.time()
        await self._store.put(provider, str(amount), client.currency, now)
        self.known[provider] = (amount, now)
        self._check_low(provider, amount, client.currency)
        return amount

    def _check_low(self, provider: str, amount: Decimal, currency: str) -> None:
        threshold = self._below.get(provider)
        if threshold is None:
            return
        identity = f"balance_low:{provider}"
        if amount >= threshold:
            self._events.settle(identity)
            return
        self._events.emit(Alert(
            kind="balance_low", subject=provider, once=identity, repeat_s=self._repeat_s,
            message=f"{provider}: balance {amount} {currency} is below {threshold} {currency}; "
                    f"orders it cannot pay for go elsewhere",
            details={"provider": provider, "balance": str(amount), "threshold": str(threshold),
                     "currency": currency}))

    async def load(self, provider: str) -> None:
        last = await self._store.get(provider)
        if last is not None:
            self.known[provider] = (Decimal(last[0]), last[2])

    async def start(self, loop: bool = True) -> None:
        for name in self._providers:
            await self.load(name)
        if loop and self._s.balance_refresh_s > 0:
            self._task = asyncio.create_task(self._loop(), name="balance-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _due(self, provider: str) -> bool:
        fetched = self.known.get(provider, (None, 0.0))[1]
        return self._clock.time() - fetched >= self._s.balance_refresh_s

    async def refresh_due(self) -> None:
        """Refresh every provider whose known balance is older than the refresh time,
        unless another replica just did (or is doing) it."""
        for name in self._providers:
            if not self._due(name):
                continue
            await self.load(name)  # another replica may have just done it
            if not self._due(name):
                continue
            lease = keys.balance_lock(name)
            token = await self._locks.acquire(lease, LEASE_MS)
            if token is None:
                continue
            try:
                await self.load(name)  # one that held the lease until now may have done it
                if self._due(name):
                    await self.refresh(name)
            finally:
                await self._locks.release(lease, token)

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh_due()
            except GatewayError as exc:  # the loop must outlive any one failure
                log.warning("balance refresh failed", extra={"error": str(exc)})
            except Exception:
                log.exception("balance refresh failed")
            await asyncio.sleep(min(5.0, self._s.balance_refresh_s / 2))
