"""`balance`: a prepaid client's own balance, or for the operator the sum of every
upstream balance in the gateway currency (cached for `balance_cache_s`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal

from gateway import money
from gateway.clock import SYSTEM, Clock
from gateway.config import GatewaySettings
from gateway.routing.balances import Balances
from gateway.state.clients import ClientRecord
from gateway.state.ledger import Ledger
from gateway.wire import BalanceAnswer


class Balance:
    def __init__(self, settings: GatewaySettings, ledger: Ledger, balances: Balances,
                 providers: list[str], clock: Clock = SYSTEM) -> None:
        self._cache_s = settings.balance_cache_s
        self._currency = settings.currency
        self._ledger = ledger
        self._balances = balances
        self._providers = providers
        self._clock = clock
        self._cached: tuple[float, BalanceAnswer] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, client: ClientRecord, fields: Mapping[str, str]) -> BalanceAnswer:
        if client.mode == "ledger":
            amount = await self._ledger.balance(client.name)
            return BalanceAnswer(balance=money.wire(amount), currency=self._currency)
        return await self._upstream()

    def _fresh(self) -> BalanceAnswer | None:
        cached = self._cached
        if cached and self._clock.monotonic() - cached[0] < self._cache_s:
            return cached[1]
        return None

    async def _upstream(self) -> BalanceAnswer:
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._lock:  # one refresh at a time; the others take its answer
            fresh = self._fresh()
            if fresh is not None:
                return fresh

            async def one(name: str) -> Decimal | None:
                await self._balances.refresh(name)
                return self._balances.in_gateway_currency(name)

            values = await asyncio.gather(*(one(n) for n in self._providers))
            total = sum((v for v in values if v is not None), Decimal(0))
            answer = BalanceAnswer(balance=money.wire(total), currency=self._currency)
            self._cached = (self._clock.monotonic(), answer)
            return answer
