"""Scorecards: how each provider service (provider + upstream service id) delivers,
from the gateway's own orders; the evidence the routing policies weigh.

One hash per provider service (`keys.score`), shared by every replica: sums that
decay exponentially with time constant `gateway.score_window_d` (an event a window
old weighs e^-1, 37 %; at a steady pace `n` is about the events of one window).
An update is one script call (`scripts.SCORE_ADD`): decay to now, add, store. A
read decays in Python, writing nothing. Shares and means are ratios of sums that
decay alike, so decay changes the weight of the evidence, not the figures.

Fields (each a decayed sum):

    o                 orders seen (their first status answer)
    ns, ss, b0..b7    orders seen started; sum of their seconds from placement to
                      start; how many started within each START_BUCKETS bound
    nd, sd            orders seen Completed; sum of their seconds to complete
    nf                final outcomes: fc Completed, fp Partial, fx Canceled, fr Refunded
    dl                sum of the delivered fraction (1 - remains / quantity) of finals
    rq, rr            refills accepted upstream, refused upstream
    ro, rf            refill outcomes: Completed, Rejected or Error
    cq, cr            cancels accepted upstream, refused upstream

Times are as polls saw them: an order counts as started (or completed) when a
status answer first shows it, so they run late by up to the polling interval.
Each order counts each event once (`gateway.state.history` flags); refills and
cancels count once per request the gateway sent.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.models import OrderRecord
from gateway.state import keys, scripts
from gateway.state.connect import AnyRedis, maps_redis_errors, text
from gateway.state.history import FINAL, SEEN, STARTED

DAY_S = 86400.0
KEEP_WINDOWS = 10  # a card untouched this many windows (weight < e^-10) expires
START_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 12 * 3600, 86400)  # b7: slower
_OUTCOME_FIELD = {"Completed": "fc", "Partial": "fp", "Canceled": "fx", "Refunded": "fr"}

Key = tuple[str, str]  # (provider, upstream service id)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 1e-9 else None


@dataclass(frozen=True, slots=True)
class Scorecard:
    """A provider service's decayed sums (see the module doc), and what they say.
    Every figure is None while there is no evidence for it."""

    provider: str
    service: str
    sums: Mapping[str, float] = field(default_factory=dict)

    def _s(self, name: str) -> float:
        return self.sums.get(name, 0.0)

    @property
    def n(self) -> float:
        """The evidence weight: final outcomes seen, decayed."""
        return self._s("nf")

    @property
    def seen(self) -> float:
        return self._s("o")

    @property
    def starts(self) -> float:
        """The evidence weight of the start times: orders seen started, decayed."""
        return self._s("ns")

    @property
    def started_share(self) -> float | None:
        """Of the orders seen, the share seen started (stalls pull it down)."""
        return _share(self._s("ns"), self._s("o"))

    @property
    def start_mean_s(self) -> float | None:
        return _share(self._s("ss"), self._s("ns"))

    @property
    def start_p50_s(self) -> float | None:
        """The START_BUCKETS bound under which half the starts came (inf: slower
        than the last bound)."""
        total = self._s("ns")
        if total <= 1e-9:
            return None
        running = 0.0
        for i, bound in enumerate(START_BUCKETS):
            running += self._s(f"b{i}")
            if running >= total / 2:
                return float(bound)
        return math.inf

    @property
    def complete_mean_s(self) -> float | None:
        return _share(self._s("sd"), self._s("nd"))

    @property
    def completed_share(self) -> float | None:
        return _share(self._s("fc"), self.n)

    @property
    def partial_share(self) -> float | None:
        return _share(self._s("fp"), self.n)

    @property
    def canceled_share(self) -> float | None:
        """Canceled or Refunded."""
        return _share(self._s("fx") + self._s("fr"), self.n)

    @property
    def delivered_mean(self) -> float | None:
        """Mean delivered fraction of the final outcomes (1.0: everything)."""
        return _share(self._s("dl"), self.n)

    @property
    def refill_requests(self) -> float:
        return self._s("rq") + self._s("rr")

    @property
    def refill_accepted_share(self) -> float | None:
        return _share(self._s("rq"), self.refill_requests)

    @property
    def refill_success_share(self) -> float | None:
        """Of the refills that ended, the share Completed."""
        return _share(self._s("ro"), self._s("ro") + self._s("rf"))

    @property
    def cancel_requests(self) -> float:
        return self._s("cq") + self._s("cr")

    @property
    def cancel_success_share(self) -> float | None:
        """Of the cancels sent, the share the provider accepted."""
        return _share(self._s("cq"), self.cancel_requests)

    def as_json(self) -> dict[str, Any]:
        def r(x: float | None, digits: int = 3) -> float | None:
            return None if x is None or math.isinf(x) else round(x, digits)

        return {"provider": self.provider, "service": self.service, "n": r(self.n, 2),
                "seen": r(self.seen, 2), "started_share": r(self.started_share),
                "start_p50_s": r(self.start_p50_s, 0), "start_mean_s": r(self.start_mean_s, 0),
                "complete_mean_s": r(self.complete_mean_s, 0),
                "completed_share": r(self.completed_share),
                "partial_share": r(self.partial_share),
                "canceled_share": r(self.canceled_share),
                "delivered_mean": r(self.delivered_mean),
                "refill_requests": r(self.refill_requests, 2),
                "refill_accepted_share": r(self.refill_accepted_share),
                "refill_success_share": r(self.refill_success_share),
                "cancel_requests": r(self.cancel_requests, 2),
                "cancel_success_share": r(self.cancel_success_share)}

    def summary(self) -> str:
        """One line for `route` and `catalog show`."""
        if self.seen <= 1e-9 and self.refill_requests + self.cancel_requests <= 1e-9:
            return "no evidence yet"
        parts = [f"n {self.n:.1f}"]
        for name, value in (("completed", self.completed_share),
                            ("partial", self.partial_share),
                            ("canceled", self.canceled_share),
                            ("delivered", self.delivered_mean),
                            ("started", self.started_share)):
            if value is not None:
                parts.append(f"{name} {value:.0%}")
        if self.start_p50_s is not None:
            parts.append(f"start p50 <= {_duration(self.start_p50_s)}")
        if self.complete_mean_s is not None:
            parts.append(f"complete ~{_duration(self.complete_mean_s)}")
        if self.refill_requests > 1e-9:
            parts.append(f"refills accepted {_pct(self.refill_accepted_share)}, "
                         f"done {_pct(self.refill_success_share)}")
        if self.cancel_requests > 1e-9:
            parts.append(f"cancels accepted {_pct(self.cancel_success_share)}")
        return ", ".join(parts)


    def brief(self) -> str:
        """A few columns for `catalog show`."""
        if self.seen <= 1e-9:
            return "no evidence"
        start = self.start_p50_s
        return (f"n {self.n:.1f} completed {_pct(self.completed_share)} delivered "
                f"{_pct(self.delivered_mean)} start<={_duration(start) if start else '-'}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return f">{_duration(START_BUCKETS[-1])}"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


class Evidence:
    """Amounts to add to scorecards, summed per provider service before the one call
    per card."""

    def __init__(self) -> None:
        self.amounts: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def __bool__(self) -> bool:
        return bool(self.amounts)

    def add(self, provider: str, service: str, **amounts: float) -> None:
        card = self.amounts[(provider, service)]
        for name, amount in amounts.items():
            card[name] += amount

    def order(self, rec: OrderRecord, claimed: int, now: float) -> None:
        """The events an order's status change was first to claim (history flags)."""
        if claimed <= 0:
            return
        at = max(0.0, now - rec.created)
        amounts: dict[str, float] = {}
        if claimed & SEEN:
            amounts["o"] = 1
        if claimed & STARTED:
            bucket = next((i for i, b in enumerate(START_BUCKETS) if at <= b),
                          len(START_BUCKETS))
            amounts |= {"ns": 1, "ss": at, f"b{bucket}": 1}
        if claimed & FINAL and rec.status in _OUTCOME_FIELD:
            total = rec.quantity * (rec.runs or 1)
            remains = _number(rec.remains)
            if remains is None:
                remains = 0 if rec.status == "Completed" else total
            delivered = min(1.0, max(0.0, 1 - remains / total)) if total else 0.0
            amounts |= {"nf": 1, _OUTCOME_FIELD[rec.status]: 1, "dl": delivered}
            if rec.status == "Completed":
                amounts |= {"nd": 1, "sd": at}
        if amounts:
            self.add(rec.provider, rec.upstream_service, **amounts)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _card(provider: str, service: str, raw: Mapping[Any, Any], now: float,
          tau: float) -> Scorecard:
    sums = {text(k): float(text(v)) for k, v in raw.items()}
    t = sums.pop("t", now)
    f = math.exp(-(now - t) / tau) if now > t else 1.0
    return Scorecard(provider, service, {k: v * f for k, v in sums.items()})


@maps_redis_errors
class Scores:
    def __init__(self, redis: AnyRedis, window_d: float, clock: Clock) -> None:
        self._redis = redis
        self._tau = window_d * DAY_S
        self._clock = clock
        self._add = redis.register_script(scripts.SCORE_ADD)

    async def add(self, evidence: Evidence) -> dict[Key, Scorecard]:
        """Add the evidence, one call per card, all at once; the cards after it."""
        now = self._clock.time()
        ttl = int(self._tau * KEEP_WINDOWS) + 1

        async def one(key: Key, amounts: Mapping[str, float]) -> Scorecard:
            args: list[Any] = [f"{now:.3f}", self._tau, ttl]
            for name, amount in amounts.items():
                args += [name, repr(float(amount))]
            flat = await self._add(keys=[keys.score(*key)], args=args)
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            return _card(*key, raw, now, self._tau)

        pairs = list(evidence.amounts.items())
        cards = await asyncio.gather(*(one(k, a) for k, a in pairs))
        return {k: c for (k, _), c in zip(pairs, cards, strict=True)}

    async def scorecard(self, provider: str, service: str) -> Scorecard:
        return (await self.scorecards([(provider, service)]))[(provider, service)]

    async def scorecards(self, which: Iterable[Key]) -> dict[Key, Scorecard]:
        """The cards of these provider services, decayed to now (one round trip); a
        card with no evidence has empty sums."""
        wanted = list(dict.fromkeys(which))
        if not wanted:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for key in wanted:
            pipe.hgetall(keys.score(*key))
        now = self._clock.time()
        return {key: _card(*key, raw or {}, now, self._tau)
                for key, raw in zip(wanted, await pipe.execute(), strict=True)}
