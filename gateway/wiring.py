"""Opening every resource the gateway needs, in one place, on one AsyncExitStack.

The app's lifespan, the operator commands (`route`, `catalog show`) and the
unit tests all build the same `Resources` here, so what `route` explains is
what a serving replica does. Whatever is opened is closed, in reverse order,
even when start-up fails half-way.

    lasting (for the process): redis -> journal -> recovery (journal replay,
                               reservations without a record)
    config (reloadable):       alerts (serving only; else a no-op sink) -> state
                               (orders, ledger, claims, clients, limits, breakers,
                               caches) -> provider clients -> catalog -> balances
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
from gateway.errors import ConfigError
from gateway.events import NOOP, Events
from gateway.routing.balances import Balances
from gateway.routing.catalog import Catalog
from gateway.routing.decide import Weigher
from gateway.state.alerts import AlertLog
from gateway.state.balances import KnownBalances
from gateway.state.breakers import Breakers
from gateway.state.catalogs import Catalogs
from gateway.state.claims import Claims
from gateway.state.clients import Directory
from gateway.state.connect import AnyRedis, connect, fill_pool, ping
from gateway.state.connect import release_idle as release_idle_redis
from gateway.state.durability import Durability
from gateway.state.history import History
from gateway.state.journal import Journal
from gateway.state.ledger import Ledger
from gateway.state.limits import RateLimiter
from gateway.state.locks import Locks
from gateway.state.orders import Orders
from gateway.state.recovery import Recovery
from gateway.state.rescues import Rescues
from gateway.state.scores import Scores
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
    history: History  # every order's status changes (gateway.state.history)
    scores: Scores  # every provider service's scorecard (gateway.state.scores)
    weigher: Weigher  # the scorecards routing policies weigh, cached briefly per process
    rescues: Rescues  # orders the rescue job watches (gateway.state.rescues)
    serving: bool = False  # background jobs of the actions (the rescue) run


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


@dataclass(slots=True)
class Lasting:
    """What lives as long as the process, whatever config it runs: the Redis client,
    the journal (one owner lock per process) and the recovery of its entries; the
    orders store too (it hands out ids a block at a time: a reload wastes none)."""

    redis: AnyRedis
    orders: Orders
    ledger: Ledger
    recovery: Recovery
    clock: Clock
    durability: Durability


@asynccontextmanager
async def open_lasting(redis_url: str, *, serving: bool = True,
                       journal_dir: Path | None = None,
                       clock: Clock = SYSTEM) -> AsyncIterator[Lasting]:
    """The Redis client and, when serving, the journal and its recovery loop."""
    async with AsyncExitStack() as stack:
        redis = connect(redis_url)
        stack.push_async_callback(redis.aclose)
        journal = Journal(journal_dir or Path("data") / "journal")
        durability = Durability(redis)
        orders, ledger = Orders(redis, durability), Ledger(redis, clock)
        recovery = Recovery(orders, ledger, Directory(redis, clock), Locks(redis), journal,
                            clock)
        await ping(redis)
        if serving:
            await fill_pool(redis)
            await durability.watch()
            await orders.identity()
            durability.start(on_moved=orders.ids.moved)
            stack.push_async_callback(durability.aclose)
            journal.open()
            stack.callback(journal.close)
            stack.push_async_callback(recovery.aclose)
            await recovery.start()
        yield Lasting(redis, orders, ledger, recovery, clock, durability)


@asynccontextmanager
async def open_config(settings: Settings, lasting: Lasting, *, serving: bool = True,
                      transport: TransportFactory | None = None,
                      webhook_transport: WebhookTransport | None = None,
                      complete: bool = False) -> AsyncIterator[Resources]:
    """Everything a config decides, over the process's `lasting` part: opened and
    ready, closed on exit. A config reload opens another while this one drains.
    `complete`: every provider's service list must be in (else ConfigError, and the
    config's clients are not imported): a reload must not break `services`."""
    g = settings.gateway
    redis, clock = lasting.redis, lasting.clock
    lasting.durability.configure(g.durability, g.durability_replicas, g.durability_timeout_ms)
    if serving:
        await lasting.durability.watch()

    def default_transport(p: ProviderSettings) -> Transport:
        return make_transport(g.transport, p.url, p.timeout_s, p.max_concurrency)

    make = transport or default_transport
    async with AsyncExitStack() as stack:
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
        orders, catalogs = lasting.orders, Catalogs(redis)
        directory = Directory(redis, clock)  # its key cache starts empty: new settings at once
        catalog = Catalog(settings, catalogs, locks, providers, clock, events=events)
        stack.push_async_callback(catalog.aclose)
        wait = max((p.timeout_s for p in settings.providers), default=1.0)
        await catalog.start(wait_s=wait, loop=serving)
        missing = catalog.never_fetched()
        if complete and missing:  # before anything is written to Redis
            raise ConfigError(f"no service list from provider {', '.join(missing)} (it did "
                              f"not answer within {wait:g} s): `services` would fail")
        balances = Balances(KnownBalances(redis), locks, providers, g, clock, breakers,
                            events=events, alerts=settings.alerts)
        stack.push_async_callback(balances.aclose)
        await balances.start(loop=serving)
        if serving:
            await orders.set_sequence_floors(g.order_id_start, g.refill_id_start)
            await directory.import_config(settings.clients)
        scores = Scores(redis, g.score_window_d, clock)
        yield Resources(
            settings=settings, clock=clock, redis=redis, orders=orders, catalogs=catalogs,
            ledger=lasting.ledger,
            claims=Claims(redis, clock, claim_lease_s(settings), lasting.durability),
            directory=directory, limiter=RateLimiter(redis, clock), breakers=breakers,
            providers=providers, catalog=catalog, balances=balances,
            recovery=lasting.recovery, alerts=alert_log, events=events,
            history=History(redis), scores=scores,
            weigher=Weigher(scores, clock, g.policy_cache_s),
            rescues=Rescues(redis), serving=serving)


@asynccontextmanager
async def open_resources(settings: Settings, redis_url: str, *, serving: bool = True,
                         journal_dir: Path | None = None,
                         transport: TransportFactory | None = None,
                         clock: Clock = SYSTEM,
                         webhook_transport: WebhookTransport | None = None,
                         ) -> AsyncIterator[Resources]:
    """Everything opened and ready (`open_lasting`, then `open_config`); closed on exit.

    `serving`: start the background refresh of catalogs and balances, raise the
    id counters to their configured floors and import the config's clients.
    Without it (operator commands) the shared state is only read.
    `journal_dir`: where this process keeps the outcomes Redis could not take
    (`gateway.state.journal`); serving needs one (default `./data/journal`).
    `transport`: how to reach a provider (tests pass a mock transport).
    `webhook_transport`: how to reach the alert webhooks (likewise).
    Alerts are sent only when serving; operator commands raise none.
    """
    async with open_lasting(redis_url, serving=serving, journal_dir=journal_dir,
                            clock=clock) as lasting, \
            open_config(settings, lasting, serving=serving, transport=transport,
                        webhook_transport=webhook_transport) as resources:
        yield resources
