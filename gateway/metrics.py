"""Prometheus metrics: every metric the gateway exports, and the one-line helpers
that record them (`request`, `upstream`, `order_placed`, `redis_error`, `set_gauges`).

    smm_requests_total{action,outcome}            /api/v2 requests answered
    smm_request_seconds{action}                   their latency (histogram)
    smm_upstream_calls_total{provider,action,outcome}, smm_upstream_seconds{provider,action}
    smm_orders_total{provider,service}            orders placed (gateway service id)
    smm_charged_total / smm_cost_total / smm_margin_total / smm_loss_total{provider,service}
                                                  money of those orders, gateway currency
    smm_redis_errors_total                        requests answered 503 because Redis failed
    smm_breaker_open{provider}, smm_provider_balance{provider},
    smm_catalog_age_seconds{provider}, smm_unknown_orders   gauges, set at scrape time
    smm_score_completed_share{provider,upstream_service}, smm_score_delivered_fraction{...}
                                                  scorecards (gateway.state.scores), set
                                                  when a status poll updates one

Labels are bounded: actions are the known ones (the edge maps anything else to
"other"), providers and services come from the config. No key, client or link.
The scorecard gauges are labelled by upstream service: at most MAX_SCORE_SERIES
pairs per process (a mirrored catalog can route to many).

One process or many. `smm-gateway serve --workers N` (N > 1) sets
PROMETHEUS_MULTIPROC_DIR before uvicorn spawns its workers; prometheus-client then
keeps every value in a per-process file there, and a scrape of any worker merges
them all (`MultiProcessCollector`): counters and histograms are summed over the
workers, dead ones included, so totals never go backwards when a worker is
replaced. Gauges are set by the scraping worker just before it collects, in
`livemostrecent` mode: the merged value is the one just set, and a dead worker's
gauges drop out (`process_exit` at a worker's shutdown, `_forget_dead` for one
that crashed). With one worker (or in tests) the values live in this process.

The mode is decided by prometheus-client when it is first imported, from the
environment; `MULTIPROCESS` reads that decision, so recording and scraping agree.

Leaf module: it imports nothing of the gateway but base modules, so every layer
may record without an import cycle. Money is Decimal everywhere else; only here
does it become a float.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import time
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.errors import Ambiguous, BadAnswer, Rejected, Unavailable, Unreachable
from gateway.models import OrderRecord

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# chosen by prometheus-client at its import: values in per-process files (many workers)
MULTIPROCESS: bool = values.ValueClass is not values.MutexValue

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    20.0, 30.0)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created`: same in both modes
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("smm_requests_total", "API v2 requests answered, by action and outcome",
                   ["action", "outcome"], registry=REGISTRY)
REQUEST_SECONDS = Histogram("smm_request_seconds", "API v2 request latency, by action",
                            ["action"], buckets=REQUEST_BUCKETS, registry=REGISTRY)
UPSTREAM_CALLS = Counter("smm_upstream_calls_total",
                         "Calls to upstream providers, by provider, action and outcome",
                         ["provider", "action", "outcome"], registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("smm_upstream_seconds", "Upstream call latency",
                             ["provider", "action"], buckets=UPSTREAM_BUCKETS,
                             registry=REGISTRY)
_MONEY = ["provider", "service"]
ORDERS = Counter("smm_orders_total", "Orders placed, by provider and gateway service",
                 _MONEY, registry=REGISTRY)
CHARGED = Counter("smm_charged_total", "Charged to clients for placed orders "
                  "(gateway currency, at placement; refunds not subtracted)",
                  _MONEY, registry=REGISTRY)
COST = Counter("smm_cost_total", "Cost at providers of placed orders (gateway currency)",
               _MONEY, registry=REGISTRY)
MARGIN = Counter("smm_margin_total", "Charge minus cost of orders placed at a profit "
                 "(gateway currency)", _MONEY, registry=REGISTRY)
LOSS = Counter("smm_loss_total", "Cost minus charge of orders placed below cost "
               "(charged - cost = margin - loss)", _MONEY, registry=REGISTRY)
REDIS_ERRORS = Counter("smm_redis_errors_total",
                       "Requests answered 503 because Redis failed", registry=REGISTRY)
BREAKER_OPEN = Gauge("smm_breaker_open", "1 while the provider's breaker is open or "
                     "half-open, else 0", ["provider"], multiprocess_mode="livemostrecent",
                     registry=REGISTRY)
BALANCE = Gauge("smm_provider_balance", "Last known provider balance (gateway currency)",
                ["provider"], multiprocess_mode="livemostrecent", registry=REGISTRY)
CATALOG_AGE = Gauge("smm_catalog_age_seconds", "Age of the provider's service list "
                    "(+Inf: never fetched)", ["provider"],
                    multiprocess_mode="livemostrecent", registry=REGISTRY)
UNKNOWN_ORDERS = Gauge("smm_unknown_orders", "Orders whose upstream outcome is not known "
                       "(or still in flight)", multiprocess_mode="livemostrecent",
                       registry=REGISTRY)

SCORE_COMPLETED = Gauge("smm_score_completed_share", "Scorecard: share of final outcomes "
                        "Completed (decayed over gateway.score_window_d)",
                        ["provider", "upstream_service"], multiprocess_mode="mostrecent",
                        registry=REGISTRY)
SCORE_DELIVERED = Gauge("smm_score_delivered_fraction", "Scorecard: mean delivered fraction "
                        "(1 - remains / quantity) of final outcomes",
                        ["provider", "upstream_service"], multiprocess_mode="mostrecent",
                        registry=REGISTRY)
MAX_SCORE_SERIES = 500

# label children, looked up once: the hot path is a dict hit and an increment
_requests: dict[tuple[str, str], Counter] = {}
_latency: dict[str, Histogram] = {}
_calls: dict[tuple[str, str, str], Counter] = {}
_call_latency: dict[tuple[str, str], Histogram] = {}
_scored: set[tuple[str, str]] = set()


def request(action: str, outcome: str, seconds: float) -> None:
    """One API request answered (action: a known action, "other" or "none")."""
    counter = _requests.get((action, outcome))
    if counter is None:
        counter = _requests[action, outcome] = REQUESTS.labels(action, outcome)
    counter.inc()
    histogram = _latency.get(action)
    if histogram is None:
        histogram = _latency[action] = REQUEST_SECONDS.labels(action)
    histogram.observe(seconds)


def upstream_outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    for kind, name in _UPSTREAM_OUTCOMES:
        if isinstance(exc, kind):
            return name
    return "error"


_UPSTREAM_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (Rejected, "rejected"),  # a definite {"error": ...}
    (Unreachable, "unreachable"),  # never reached it
    (Ambiguous, "ambiguous"),  # timeout after sending, reset
    (Unavailable, "unavailable"),  # 5xx, 429
    (BadAnswer, "bad_answer"),  # HTML, junk
    (asyncio.CancelledError, "cancelled"),  # the request awaiting it went away
)


class UpstreamCall:
    """`with metrics.upstream(provider, action):` around one call to a provider."""

    __slots__ = ("_provider", "_action", "_started")

    def __init__(self, provider: str, action: str) -> None:
        self._provider = provider
        self._action = action
        self._started = 0.0

    def __enter__(self) -> UpstreamCall:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        seconds = time.perf_counter() - self._started
        key = (self._provider, self._action, upstream_outcome(exc))
        counter = _calls.get(key)
        if counter is None:
            counter = _calls[key] = UPSTREAM_CALLS.labels(*key)
        counter.inc()
        histogram = _call_latency.get(key[:2])
        if histogram is None:
            histogram = _call_latency[key[:2]] = UPSTREAM_SECONDS.labels(*key[:2])
        histogram.observe(seconds)


def upstream(provider: str, action: str) -> UpstreamCall:
    return UpstreamCall(provider, action)


def upstream_latency() -> dict[str, dict[str, float]]:
    """This process's upstream calls per provider since it started (every action):
    {"calls", "mean_s", "p90_s"} (p90_s: the upper bound of the histogram bucket that
    holds the 90th percentile; inf past the last bucket)."""
    sums: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in UPSTREAM_SECONDS.collect():
        for sample in family.samples:
            provider = sample.labels.get("provider", "")
            mine = sums.setdefault(provider, {"calls": 0.0, "sum": 0.0})
            if sample.name.endswith("_count"):
                mine["calls"] += sample.value
            elif sample.name.endswith("_sum"):
                mine["sum"] += sample.value
            elif sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                into = buckets.setdefault(provider, {})
                into[le] = into.get(le, 0.0) + sample.value
    out: dict[str, dict[str, float]] = {}
    for provider, mine in sums.items():
        calls = mine["calls"]
        if not calls:
            continue
        p90 = next((le for le, n in sorted(buckets.get(provider, {}).items())
                    if n >= 0.9 * calls), float("inf"))
        out[provider] = {"calls": int(calls), "mean_s": round(mine["sum"] / calls, 4),
                         "p90_s": p90}
    return out


def order_placed(record: OrderRecord) -> None:
    """A provider took the order: count it and its money (charge and cost are Decimal in
    the gateway currency; the margin is computed exactly before it becomes a float)."""
    labels = (record.provider, str(record.service))
    ORDERS.labels(*labels).inc()
    CHARGED.labels(*labels).inc(float(record.charge))
    COST.labels(*labels).inc(float(record.cost))
    margin = record.charge - record.cost
    if margin >= 0:
        MARGIN.labels(*labels).inc(float(margin))
    else:
        LOSS.labels(*labels).inc(float(-margin))


def scorecard(provider: str, service: str, completed: float | None,
              delivered: float | None) -> None:
    """A provider service's scorecard as just updated (None: no final outcome yet)."""
    key = (provider, service)
    if key not in _scored:
        if len(_scored) >= MAX_SCORE_SERIES:
            return
        _scored.add(key)
    if completed is not None:
        SCORE_COMPLETED.labels(*key).set(completed)
    if delivered is not None:
        SCORE_DELIVERED.labels(*key).set(delivered)


def redis_error() -> None:
    REDIS_ERRORS.inc()


def set_gauges(*, breakers_open: Mapping[str, bool], balances: Mapping[str, Decimal],
               catalog_ages: Mapping[str, float], unknown_orders: int | None) -> None:
    """The scrape-time gauges, as this process sees them now (a provider whose balance
    is not known is left out; `unknown_orders` None: not known, left as it was)."""
    for provider, is_open in breakers_open.items():
        BREAKER_OPEN.labels(provider).set(1.0 if is_open else 0.0)
    for provider, amount in balances.items():
        BALANCE.labels(provider).set(float(amount))
    for provider, age in catalog_ages.items():
        CATALOG_AGE.labels(provider).set(age)
    if unknown_orders is not None:
        UNKNOWN_ORDERS.set(unknown_orders)


def exposition() -> bytes:
    """The Prometheus text exposition: this process's metrics, or every worker's merged."""
    path = os.environ.get(ENV_DIR)
    if not MULTIPROCESS or not path:  # (without its directory: this process's own values)
        return generate_latest(REGISTRY)
    _forget_dead(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exit() -> None:
    """This worker is stopping: its `live*` gauges leave the merged view (its counters
    stay, so totals never go backwards)."""
    if MULTIPROCESS and os.environ.get(ENV_DIR):
        mark_process_dead(os.getpid(), os.environ[ENV_DIR])  # type: ignore[no-untyped-call]


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _forget_dead(path: str) -> None:
    """The live gauges of workers that died without `process_exit` (killed, crashed)."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        m = _LIVE_FILE.fullmatch(os.path.basename(name))
        if m is None or _alive(int(m.group(1))):
            continue
        mark_process_dead(int(m.group(1)), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
