"""Circuit breakers shared by every replica, per provider and per provider service.

Breakers live in Redis and change only inside Lua scripts (`scripts.BREAKER_*`),
so a trip by one replica is what every replica sees on its next `add`:

- closed: outcomes are counted in one-second buckets over a sliding window; at
  `min_requests` or more with a failure rate of `threshold` or more it opens;
- open: candidates behind it are skipped without a round trip upstream; after
  `cooldown_s` the next `add` that asks becomes the single probe (half-open);
- half-open: the probe's success closes it, its failure opens it again; a probe
  that never reports (crashed replica) is replaced after PROBE_TTL_MS.

Reads (status, refill_status, balances) skip a provider whose breaker is open
and answer from what is stored (`is_open`, looked up at most once per
OPEN_CACHE_S per process); writes other than `add` answer "unavailable".

"Service disabled" is the service's failure, a timeout the provider's; which is
which is `gateway.upstream.classify.blame`. A client's bad input never counts.

Successes of reads are counted in memory and flushed every FLUSH_S (or at
`aclose`); failures and probe outcomes are sent at once.

A provider's breaker opening (from closed) and closing (after a good probe) are
alerts (`gateway.events`); the script tells exactly one caller of each change.
A failed probe re-opening it is not: the provider is still failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from gateway.clock import SYSTEM, Clock
from gateway.config import GatewaySettings
from gateway.errors import StoreUnavailable
from gateway.events import NOOP, Alert, Events
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors, text

log = logging.getLogger("gateway.breakers")

FLUSH_S = 0.1
PROBE_TTL_MS = 30_000
OPEN_CACHE_S = 1.0
KEEP_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Gate:
    """What a breaker says to one candidate: go, go as the probe, or why not."""

    allowed: bool
    probe: bool = False
    reason: str | None = None


def _gate(verdict: int, which: int, state: str) -> Gate:
    if verdict == 0:
        where = " (service)" if which == 2 else ""
        word = "half-open, a probe is out" if state == "half" else "open"
        return Gate(False, reason=f"breaker {word}{where}")
    return Gate(True, probe=verdict == 2)


@maps_redis_errors
class Breakers:
    def __init__(self, redis: AnyRedis, settings: GatewaySettings,
                 clock: Clock = SYSTEM, events: Events = NOOP) -> None:
        self._redis = redis
        self._events = events
        self._s = settings
        self._clock = clock
        self._record = redis.register_script(scripts.BREAKER_RECORD)
        self._allow = redis.register_script(scripts.BREAKER_ALLOW)
        self._pending: dict[str, int] = defaultdict(int)
        self._task: asyncio.Task[None] | None = None
        self._open: dict[str, tuple[float, float]] = {}  # provider -> (looked at, open until)

    def _now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    async def allow(self, provider: str, service: str, take: bool = True) -> Gate:
        """May an order go to this candidate now? With `take`, a due probe is taken
        (the caller must then report its outcome); without, nothing changes."""
        verdict, which, state = await self._allow(
            keys=[keys.breaker(provider), keys.breaker(provider, service)],
            args=[self._now_ms(), int(self._s.breaker_cooldown_s * 1000),
                  PROBE_TTL_MS, KEEP_MS, "1" if take else "0"])
        return _gate(int(verdict), int(which), text(state))

    async def is_open(self, provider: str) -> bool:
        """Whether the provider's breaker is open and its cooldown still running (a
        read would only add load to a provider that is failing)."""
        now = self._clock.monotonic()
        seen = self._open.get(provider)
        if seen is None or now - seen[0] >= OPEN_CACHE_S:
            state, since = await self._redis.hmget(keys.breaker(provider), ["state", "since"])
            until = 0.0
            if state is not None and text(state) == "open":
                until = int(text(since or b"0")) / 1000 + self._s.breaker_cooldown_s
            seen = self._open[provider] = (now, until)
        return self._clock.time() < seen[1]

    async def failure(self, provider: str, service: str | None = None) -> None:
        """Count a failure now: a trip must be seen by every replica's next request.
        With `service`, the service's breaker; else the provider's."""
        await self._send(keys.breaker(provider, service), 0, 1,
                         provider if service is None else None)

    async def success(self, provider: str, service: str | None = None,
                      probe: bool = False) -> None:
        """Count a success: at once for a probe (it closes the breaker), else batched
        with others and flushed within FLUSH_S."""
        if probe:
            await self._send(keys.breaker(provider), 1, 0, provider)
            if service is not None:
                await self._send(keys.breaker(provider, service), 1, 0)
            return
        self._pending[provider] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        """Send the batched successes now."""
        pending, self._pending = self._pending, defaultdict(int)
        for provider, successes in pending.items():
            key = keys.breaker(provider)
            try:
                await self._send(key, successes, 0, provider)
            except StoreUnavailable as exc:  # health counting never fails a request
                log.warning("breaker counts not flushed", extra={"breaker": key,
                                                                  "error": exc.message})

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def _send(self, key: str, s: int, f: int, provider: str | None = None) -> None:
        """Count outcomes on one breaker. `provider`: it is that provider's own breaker
        (whose changes are alerts)."""
        now_ms = self._now_ms()
        reply = await self._record(
            keys=[key], args=[now_ms, s, f, int(self._s.breaker_window_s),
                              self._s.breaker_min_requests, self._s.breaker_threshold, KEEP_MS])
        state, before = text(reply[0]), text(reply[1])
        if state == "open" and f:
            log.warning("breaker open", extra={"breaker": key})
        if provider is not None and state != before:
            self._changed(provider, now_ms, state, before, [int(n) for n in reply[2:]])

    def _changed(self, provider: str, now_ms: int, state: str, before: str,
                 counts: list[int]) -> None:
        s = self._s
        if state == "open" and before == "closed":
            calls, fails = (counts + [0, 0])[:2]
            self._events.emit(Alert(
                kind="breaker_open", subject=provider, once=f"breaker_open:{provider}:{now_ms}",
                message=f"{provider}: circuit breaker opened ({fails} of {calls} calls failed "
                        f"within {s.breaker_window_s:g} s); its candidates are skipped, a probe "
                        f"follows in {s.breaker_cooldown_s:g} s",
                details={"provider": provider, "calls": calls, "failures": fails,
                         "window_s": s.breaker_window_s, "cooldown_s": s.breaker_cooldown_s}))
        elif state == "closed" and before == "half":
            self._events.emit(Alert(
                kind="breaker_closed", subject=provider,
                once=f"breaker_closed:{provider}:{now_ms}",
                message=f"{provider}: circuit breaker closed (a probe succeeded); orders go "
                        f"to it again",
                details={"provider": provider}))

    async def window(self, provider: str) -> tuple[str, int, int]:
        """(state, calls, failures) of a provider's breaker over its sliding window
        (`breaker_window_s`) as stored, one HGETALL (for the operator's views). While
        open or half-open nothing is counted: both are 0. Successes of reads reach it
        within FLUSH_S."""
        raw = await self._redis.hgetall(keys.breaker(provider))
        oldest = int(self._clock.time()) - int(self._s.breaker_window_s)
        state, calls, failures = "closed", 0, 0
        for field, value in (raw or {}).items():
            name = text(field)
            if name == "state":
                state = text(value)
            kind, _, at = name.partition(":")
            if kind in ("s", "f") and at.isdigit() and int(at) > oldest:
                calls += int(value)
                failures += int(value) if kind == "f" else 0
        return state, calls, failures

    async def state(self, provider: str, service: str | None = None) -> str:
        """"closed", "open" or "half" as stored (for the operator's views)."""
        value = await self._redis.hget(keys.breaker(provider, service), "state")
        return text(value) if value is not None else "closed"
