"""Provider health shared by every replica: circuit breakers and known balances.

Breakers live in Redis and change only inside Lua scripts, so a trip by one
replica is what every replica sees on its next `add`:

- closed: outcomes are counted in one-second buckets over a sliding window; at
  `min_requests` or more with a failure rate of `threshold` or more it opens;
- open: candidates behind it are skipped without a round trip upstream; after
  `cooldown_s` the next `add` that asks becomes the single probe (half-open);
- half-open: the probe's success closes it, its failure opens it again; a probe
  that never reports (crashed replica) is replaced after PROBE_TTL_MS.

A breaker exists per provider and per provider service: "service disabled" is
the service's failure, a timeout is the provider's. What counts as a failure is
`classify()`; a client's bad input never does.

Outcomes of status and other reads are counted in memory and flushed every
FLUSH_S; failures are flushed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from redis.exceptions import RedisError

from gateway import keys
from gateway.config import GatewaySettings
from gateway.errors import ProviderError, Rejected
from gateway.money import Converter
from gateway.provider import ProviderClient
from gateway.store import AnyRedis, Store, text

log = logging.getLogger("gateway.health")

FLUSH_S = 0.1
PROBE_TTL_MS = 30_000
KEEP_MS = 7 * 24 * 3600 * 1000

Blame = Literal["provider", "service"]

_FUNDS = re.compile(r"fund|balance", re.IGNORECASE)
_SERVICE = re.compile(r"service|disabled|not available|unavailable", re.IGNORECASE)
_PROVIDER = re.compile(r"rate[\s_-]?limit|too many|maintenance|temporar|try again|api key",
                       re.IGNORECASE)

# KEYS: breaker. ARGV: now ms, successes, failures, window s, min requests, threshold.
_RECORD = """
local now, s, f = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, minreq, thr = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function reset(to)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', to, 'since', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return to
end
if state == 'half' then
  if f > 0 then return reset('open') end
  if s > 0 then return reset('closed') end
  return state
end
if state == 'open' then return state end
local sec = math.floor(now / 1000)
if s > 0 then redis.call('HINCRBY', KEYS[1], 's:' .. sec, s) end
if f > 0 then redis.call('HINCRBY', KEYS[1], 'f:' .. sec, f) end
local total, fails = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local kind, at = string.match(all[i], '^([sf]):(%d+)$')
  if kind then
    if tonumber(at) <= sec - window then
      redis.call('HDEL', KEYS[1], all[i])
    else
      local n = tonumber(all[i + 1])
      total = total + n
      if kind == 'f' then fails = fails + n end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
if total >= minreq and fails / total >= thr then return reset('open') end
return 'closed'
"""

# KEYS: provider breaker, service breaker. ARGV: now ms, cooldown ms, probe ttl ms, keep ms.
# Returns {verdict, which}: verdict 1 = go, 2 = go as the probe, 0 = open.
_ALLOW = """
local now = tonumber(ARGV[1])
for i = 1, 2 do
  local state = redis.call('HGET', KEYS[i], 'state') or 'closed'
  if state ~= 'closed' then
    local since = tonumber(redis.call('HGET', KEYS[i], 'since') or '0')
    if state == 'open' and now - since >= tonumber(ARGV[2]) then
      redis.call('HSET', KEYS[i], 'state', 'half', 'since', ARGV[1])
      redis.call('PEXPIRE', KEYS[i], ARGV[4])
      return {2, i}
    end
    if state == 'half' and now - since >= tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[i], 'since', ARGV[1])
      return {2, i}
    end
    return {0, i}
  end
end
return {1, 0}
"""


def classify(exc: ProviderError) -> Blame | None:
    """Whose failure an upstream error is; None when it says nothing about health."""
    if isinstance(exc, Rejected):
        if _FUNDS.search(exc.message) or _PROVIDER.search(exc.message):
            return "provider"
        if _SERVICE.search(exc.message) and "quantity" not in exc.message.lower():
            return "service"
        return None  # the order's own fault (link, quantity, active order): healthy
    return "provider"


def is_funds(exc: ProviderError) -> bool:
    return isinstance(exc, Rejected) and bool(_FUNDS.search(exc.message))


@dataclass(frozen=True, slots=True)
class Gate:
    allowed: bool
    probe: bool = False
    reason: str | None = None


class Breakers:
    def __init__(self, redis: AnyRedis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._s = settings
        self._record = redis.register_script(_RECORD)
        self._allow = redis.register_script(_ALLOW)
        self._pending: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self._task: asyncio.Task[None] | None = None

    async def allow(self, provider: str, service: str) -> Gate:
        verdict, which = await self._allow(
            keys=[keys.breaker(provider), keys.breaker(provider, service)],
            args=[int(time.time() * 1000), int(self._s.breaker_cooldown_s * 1000),
                  PROBE_TTL_MS, KEEP_MS])
        if int(verdict) == 0:
            return Gate(False, reason="breaker open" + (" (service)" if int(which) == 2 else ""))
        return Gate(True, probe=int(verdict) == 2)

    async def failure(self, provider: str, service: str | None,
                      blame: Blame = "provider") -> None:
        """Count a failure now: a trip must be seen by every replica's next request."""
        await self._send(keys.breaker(provider, service if blame == "service" else None), 0, 1)

    async def success(self, provider: str, service: str | None = None,
                      probe: bool = False) -> None:
        """Count a success: at once for a probe (it closes the breaker), else batched
        with others and flushed within FLUSH_S."""
        if probe:
            await self._send(keys.breaker(provider), 1, 0)
            if service is not None:
                await self._send(keys.breaker(provider, service), 1, 0)
            return
        self._pending[keys.breaker(provider)][0] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0])
        for key, (s, f) in pending.items():
            try:
                await self._send(key, s, f)
            except RedisError as exc:  # health counting never fails a request
                log.warning("breaker counts not flushed", extra={"breaker": key,
                                                                  "error": str(exc)})

    async def _send(self, key: str, s: int, f: int) -> None:
        state = await self._record(
            keys=[key], args=[int(time.time() * 1000), s, f, int(self._s.breaker_window_s),
                              self._s.breaker_min_requests, self._s.breaker_threshold, KEEP_MS])
        if text(state) == "open" and f:
            log.warning("breaker open", extra={"breaker": key})

    async def state(self, provider: str, service: str | None = None) -> str:
        value = await self._redis.hget(keys.breaker(provider, service), "state")
        return text(value) if value is not None else "closed"

    async def describe(self, provider: str, service: str) -> str:
        """What an `add` would meet now, without changing anything: "closed", "open",
        "open, probe due" (cooldown over) or "half-open" (a probe is out)."""
        for key in (keys.breaker(provider), keys.breaker(provider, service)):
            state, since = await self._redis.hmget(key, ["state", "since"])
            if state is None or text(state) == "closed":
                continue
            if text(state) == "half":
                return "half-open"
            cooled = time.time() * 1000 - int(since or 0) >= self._s.breaker_cooldown_s * 1000
            return "open, probe due" if cooled else "open"
        return "closed"


class Balances:
    """Last known upstream balances, shared through Redis, refreshed in the background."""

    def __init__(self, store: Store, providers: Mapping[str, ProviderClient],
                 settings: GatewaySettings) -> None:
        self._store = store
        self._providers = providers
        self._s = settings
        self._converter = Converter(settings)
        self.known: dict[str, tuple[Decimal, float]] = {}  # provider -> (amount, fetched at)
        self._task: asyncio.Task[None] | None = None

    def in_gateway_currency(self, provider: str) -> Decimal | None:
        hit = self.known.get(provider)
        if hit is None:
            return None
        return self._converter.to_gateway(hit[0], self._providers[provider].currency)

    async def refresh(self, provider: str) -> Decimal | None:
        """Ask the provider now; on failure keep (and return) the last known."""
        client = self._providers[provider]
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
        await self._store.put_balance(provider, str(amount), client.currency)
        self.known[provider] = (amount, time.time())
        return amount

    async def load(self, provider: str) -> None:
        last = await self._store.get_balance(provider)
        if last is not None:
            self.known[provider] = (Decimal(last[0]), last[2])

    async def start(self) -> None:
        for name in self._providers:
            await self.load(name)
        if self._s.balance_refresh_s > 0:
            self._task = asyncio.create_task(self._loop(), name="balance-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            for name in self._providers:
                try:
                    fetched = self.known.get(name, (None, 0.0))[1]
                    if time.time() - fetched < self._s.balance_refresh_s:
                        continue
                    await self.load(name)  # another replica may have just done it
                    fetched = self.known.get(name, (None, 0.0))[1]
                    token = secrets.token_hex(8)
                    if time.time() - fetched >= self._s.balance_refresh_s and \
                            await self._store.try_lock(keys.balance_lock(name), token, 10_000):
                        await self.refresh(name)
                except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                    log.exception("balance refresh failed")
            await asyncio.sleep(min(5.0, self._s.balance_refresh_s / 2))
