"""Opening every resource the gateway needs, in one place, on one AsyncExitStack.

The app's lifespan, the operator commands (`route`, `catalog show`) and the
unit tests all build the same `Resources` here, so what `route` explains is
what a serving replica does. Whatever is opened is closed, in reverse order,
even when start-up fails half-way.

    redis -> alerts (serving only; else a no-op sink) -> state (orders, ledger,
             claims, clients, limits, breakers, caches)
          -> provider clients -> catalog -> balances -> recovery (journal replay,
             reservations without a record)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.alerts import Alerter, Webhooks
from gateway.clock import SYSTEM, Clock
from gateway.config import ProviderSettings, Settings
from gateway.events import NOOP, Events
from gateway.routing.balances import Balances
from gateway.routing.catalog import Catalog
from gateway.state.alerts import AlertLog
from gateway.state.balances import KnownBalances
from gateway.state.breakers import Breakers
from gateway.state.catalogs import Catalogs
from gateway.state.claims import Claims
from gateway.state.clients import Directory
from gateway.state.connect import AnyRedis, connect, fill_pool, ping
from gateway.state.connect import release_idle as release_idle_redis
from gateway.state.journal import Journal
from gateway.state.ledger import Ledger
from gateway.state.limits import RateLimiter
from gateway.state.locks import Locks
from gateway.state.orders import Orders
from gateway.state.recovery import Recovery
from gateway.upstream.client import ProviderClient
from gateway.upstream.transport import Transport, make_transport

TransportFactory = Callable[[ProviderSettings], Transport]
WebhookTransport = httpx.AsyncBaseTransport  # tests give the webhooks a mock one


@dataclass(slots=True)
class Resources:
    settings: Settings
    clock: Clock
    redis: AnyRedis
    orders: Orders
    catalogs: Catalogs
    ledger: Ledger
    claims: Claims
    directory: Directory
    limiter: RateLimiter
    breakers: Breakers
    providers: dict[str, ProviderClient]
    catalog: Catalog
    balances: Balances
    recovery: Recovery
    alerts: AlertLog  # the recent alerts (`recent(limit)`), for the dashboard
    events: Events  # where alerts are raised: the Alerter when serving, else NOOP


async def release_idle(resources: Resources) -> None:
    """After a burst: close the idle connections to providers and to Redis (they
    reopen when needed), so the memory they hold goes back."""
    for provider in resources.providers.values():
        provider.release_idle()
    await release_idle_redis(resources.redis)


def claim_lease_s(settings: Settings) -> float:
    """An idempotency claim's lease: the setting, and past the slowest provider's
    timeout whatever it says."""
    slowest = max((p.timeout_s for p in settings.providers), default=10.0)
    return max(settings.gateway.idempotency_lease_s, 2 * slowest + 1)


def secrets(settings: Settings) -> list[str]:
    """Every key the config knows: never in an alert."""
    found = [p.key for p in settings.providers] + [c.key for c in settings.clients]
    admin = settings.gateway.admin_key
    return [*found, *([admin] if admin else [])]


@asynccontextmanager
async def open_resources(settings: Settings, redis_url: str, *, serving: bool = True,
                         journal_dir: Path | None = None,
                         transport: TransportFactory | None = None,
                         clock: Clock = SYSTEM,
                         webhook_transport: WebhookTransport | None = None,
                         ) -> AsyncIterator[Resources]:
    """Everything opened and ready; closed on exit.

    `serving`: start the background refresh of catalogs and balances, raise the
    id counters to their configured floors and import the config's clients.
    Without it (operator commands) the shared state is only read.
    `journal_dir`: where this process keeps the outcomes Redis could not take
    (`gateway.state.journal`); serving needs one (default `./data/journal`).
    `transport`: how to reach a provider (tests pass a mock transport).
    `webhook_transport`: how to reach the alert webhooks (likewise).
    Alerts are sent only when serving; operator commands raise none.
    """
    g = settings.gateway

    def default_transport(p: ProviderSettings) -> Transport:
        return make_transport(g.transport, p.url, p.timeout_s, p.max_concurrency)

    make = transport or default_transport
    async with AsyncExitStack() as stack:
        redis = connect(redis_url)
        stack.push_async_callback(redis.aclose)
        alert_log = AlertLog(redis)
        events: Events = NOOP
        if serving:
            a = settings.alerts
            alerter = Alerter(alert_log, Webhooks(a.webhooks, a.timeout_s, a.attempts,
                                                  transport=webhook_transport),
                              secrets(settings), clock)
            alerter.start()
            stack.push_async_callback(alerter.aclose)
            events = alerter
        providers: dict[str, ProviderClient] = {}
        for p in settings.providers:
            providers[p.name] = ProviderClient(p, make(p))
            stack.push_async_callback(providers[p.name].aclose)
        locks = Locks(redis)
        breakers = Breakers(redis, g, clock, events=events)
        stack.push_async_callback(breakers.aclose)
        orders, catalogs = Orders(redis), Catalogs(redis)
        directory = Directory(redis, clock)
        await ping(redis)
        if serving:
            await fill_pool(redis)
        if serving:
            await orders.set_sequence_floors(g.order_id_start, g.refill_id_start)
            await directory.import_config(settings.clients)
        catalog = Catalog(settings, catalogs, locks, providers, clock, events=events)
        stack.push_async_callback(catalog.aclose)
        wait = max((p.timeout_s for p in settings.providers), default=1.0)
        await catalog.start(wait_s=wait, loop=serving)
        balances = Balances(KnownBalances(redis), locks, providers, g, clock, breakers,
                            events=events, alerts=settings.alerts)
        stack.push_async_callback(balances.aclose)
        await balances.start(loop=serving)
        ledger = Ledger(redis, clock)
        journal = Journal(journal_dir or Path("data") / "journal")
        recovery = Recovery(orders, ledger, directory, locks, journal, clock)
        if serving:
            journal.open()
            stack.callback(journal.close)
            stack.push_async_callback(recovery.aclose)
            await recovery.start()
        yield Resources(
            settings=settings, clock=clock, redis=redis, orders=orders, catalogs=catalogs,
            ledger=ledger, claims=Claims(redis, clock, claim_lease_s(settings)),
            directory=directory, limiter=RateLimiter(redis, clock), breakers=breakers,
            providers=providers, catalog=catalog, balances=balances, recovery=recovery,
            alerts=alert_log, events=events)
