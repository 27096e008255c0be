"""Per-day and per-minute order counters for the operator dashboard.

The add path writes them with the order's outcome, in the same pipelined round
trip (`Orders.put_order(..., tally=...)`), so counting costs no extra request:

- per UTC day (kept DAY_TTL_S): orders placed, unknown (ambiguous), failed
  (refused or no candidate took them), fallback (placed after another provider
  was tried), and the charge and cost of the placed ones (integer units of
  `money.UNIT`; refunds are not subtracted);
- per minute (kept MINUTE_TTL_S): orders placed.

An outcome that only reached the local journal (Redis was down) is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from gateway.models import OrderRecord
from gateway.money import from_units, to_units
from gateway.state import keys
from gateway.state.connect import AnyRedis, maps_redis_errors, text

DAY_TTL_S = 9 * 86400
MINUTE_TTL_S = 2 * 3600
Outcome = Literal["placed", "unknown", "failed"]


@dataclass(frozen=True, slots=True)
class Tally:
    """What to count with an order's outcome."""

    outcome: Outcome
    at: float  # unix time
    fallback: bool = False


_day_names: dict[int, str] = {}
EXPIRY_EVERY_S = 60.0  # a counter's TTL is set again this often (it may have been lost)


def day_of(at: float) -> str:
    number = int(at // 86400)
    name = _day_names.get(number)
    if name is None:
        if len(_day_names) > 64:
            _day_names.clear()
        name = _day_names[number] = time.strftime("%Y-%m-%d", time.gmtime(at))
    return name


class Expiries:
    """The counters' EXPIREs one store has sent: every order touches the same day and
    minute counters, and their TTL needs setting once, not per order (again after
    EXPIRY_EVERY_S, in case the key was lost and made again without one)."""

    def __init__(self) -> None:
        self._sent: dict[str, float] = {}  # key -> monotonic time its EXPIRE was sent

    def expire(self, pipe: Any, key: str, ttl_s: int) -> None:
        now = time.monotonic()
        if now - self._sent.get(key, -EXPIRY_EVERY_S) < EXPIRY_EVERY_S:
            return
        if len(self._sent) > 256:
            self._sent.clear()
        self._sent[key] = now
        pipe.expire(key, ttl_s)


def add_tally(pipe: Any, tally: Tally, record: OrderRecord, expiries: Expiries) -> None:
    """Queue the counters of one outcome on `pipe` (a pipeline of the caller's)."""
    day = keys.stats_day(day_of(tally.at))
    pipe.hincrby(day, tally.outcome, 1)
    if tally.outcome == "placed":
        pipe.hincrby(day, "charged", to_units(record.charge))
        pipe.hincrby(day, "cost", to_units(record.cost))
        if tally.fallback:
            pipe.hincrby(day, "fallback", 1)
        minute = keys.stats_minute(int(tally.at // 60))
        pipe.incr(minute)
        expiries.expire(pipe, minute, MINUTE_TTL_S)
    expiries.expire(pipe, day, DAY_TTL_S)


@dataclass(frozen=True, slots=True)
class Day:
    day: str
    placed: int = 0
    unknown: int = 0
    failed: int = 0
    fallback: int = 0
    charged: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    @property
    def margin(self) -> Decimal:
        return self.charged - self.cost

    @property
    def attempted(self) -> int:
        return self.placed + self.unknown + self.failed

    def __add__(self, other: Day) -> Day:
        return Day(f"{self.day}..{other.day}", self.placed + other.placed,
                   self.unknown + other.unknown, self.failed + other.failed,
                   self.fallback + other.fallback, self.charged + other.charged,
                   self.cost + other.cost)


@maps_redis_errors
class Stats:
    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def days(self, now: float, count: int = 7) -> list[Day]:
        """The last `count` UTC days, oldest first, today last (one round trip)."""
        names = [day_of(now - 86400 * back) for back in range(count - 1, -1, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.stats_day(name))
        out = []
        for name, raw in zip(names, await pipe.execute(), strict=True):
            f = {text(k): text(v) for k, v in (raw or {}).items()}
            out.append(Day(name, int(f.get("placed", 0)), int(f.get("unknown", 0)),
                           int(f.get("failed", 0)), int(f.get("fallback", 0)),
                           from_units(f.get("charged", 0)), from_units(f.get("cost", 0))))
        return out

    async def minutes(self, now: float, count: int = 60) -> list[int]:
        """Orders placed in each of the last `count` minutes, oldest first (this one last)."""
        last = int(now // 60)
        names = [keys.stats_minute(m) for m in range(last - count + 1, last + 1)]
        values = await self._redis.mget(names)
        return [int(v) if v is not None else 0 for v in values]
