"""The gateway's catalog: upstream service lists cached in Redis, and the views built on them.

Each provider's list lives in Redis (`keys.catalog`) with the time it was
fetched. Every replica keeps the lists in memory and a background task:
- reloads a list when another replica stored a newer one;
- refreshes a list past its TTL, one replica at a time (a Redis lock);
- keeps the last good list when a refresh fails, so a provider being down never
  shrinks the `services` answer (panels disable services that vanish).
The request path reads only memory: the computed `ServiceView`s and the
pre-encoded `services` answer, rebuilt whenever a list changes.

Alerts (`gateway.events`): a service that vanished upstream, seen by every replica
that takes in the list that lost it; a markup rate change held for confirmation.
Both are raised by every replica and sent once (the alert's identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from decimal import Decimal

from gateway.clock import SYSTEM, Clock
from gateway.config import Settings
from gateway.errors import ProviderError
from gateway.events import NOOP, Events
from gateway.models import CatalogEntry, Missing, UpstreamService
from gateway.money import Converter
from gateway.routing import catalog_alerts
from gateway.routing.mirror import Mirrors
from gateway.routing.views import ServiceView, build_view, etag, sources
from gateway.state import keys
from gateway.state.catalogs import Catalogs
from gateway.state.locks import Locks
from gateway.upstream.client import ProviderClient
from gateway.wire import ENCODER

log = logging.getLogger("gateway.catalog")

POLL_S = 2.0
RETRY_FAILED_S = 30.0
JITTER = 0.1  # a list comes due between 1x and 1.1x its TTL


class Catalog:
    def __init__(self, settings: Settings, catalogs: Catalogs, locks: Locks,
                 providers: Mapping[str, ProviderClient], clock: Clock = SYSTEM,
                 events: Events = NOOP) -> None:
        self._settings = settings
        self._events = events
        self._g = settings.gateway
        self._store = catalogs
        self._locks = locks
        self._clock = clock
        self._providers = providers
        self._converter = Converter(settings.gateway)
        self._currencies = {p.name: p.currency for p in settings.providers}
        self._ttl = settings.gateway.catalog_ttl_s
        self._lists: dict[str, dict[str, UpstreamService]] = {}
        self._missing: dict[str, dict[str, Missing]] = {}
        self._stamps: dict[str, float] = {}
        self._jitter: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}  # after a failed refresh: not before then
        self._published: dict[int, Decimal] = {}
        self._mirrors = Mirrors(settings, catalogs)
        self._stale: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None
        self.views: dict[int, ServiceView] = {}
        self.held: dict[int, tuple[Decimal, Decimal]] = {}  # id -> (advertised, computed)
        self.body: bytes = b"[]"
        self.etag = ""
        self.version = 0  # bumped whenever views and body are rebuilt

    async def start(self, wait_s: float, loop: bool = True) -> None:
        """Load cached lists; fetch missing or stale ones, waiting at most `wait_s`."""
        await self._sync(fetch=False, force=True)
        due = [name for name in self._providers if self._due(name)]
        if due:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.gather(*(self._refresh(n) for n in due))
            await self._sync(fetch=False, force=True)
        for name in self.never_fetched():
            log.error("no service list from this provider yet: `services` answers an error "
                      "until every provider's list is in", extra={"provider": name})
        if loop:
            self._task = asyncio.create_task(self._loop(), name="catalog-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def fetched_at(self, provider: str) -> float | None:
        return self._stamps.get(provider)

    def listed(self, provider: str) -> int:
        """How many services the provider's last list held (0: none known)."""
        return len(self._lists.get(provider, {}))

    def never_fetched(self) -> list[str]:
        """Providers whose list no replica has ever stored."""
        return [name for name in self._providers if name not in self._stamps]

    @property
    def complete(self) -> bool:
        """Every provider's list is in: a `services` answer cannot be a shrunken one."""
        return not self.never_fetched()

    async def sync(self) -> None:
        """One pass of the background loop now: take in stored lists, refresh due ones."""
        await self._sync(fetch=True)

    def _due(self, provider: str) -> bool:
        now = self._clock.time()
        age = now - self._stamps.get(provider, 0.0)
        # jitter: replicas and providers do not all come due in the same second
        jitter = self._jitter.setdefault(provider, random.uniform(0, JITTER))
        return age >= self._ttl * (1 + jitter) and now >= self._retry_at.get(provider, 0.0)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(POLL_S, self._ttl / 4))
            try:
                await self.sync()
            except Exception:  # the loop must outlive any one failure
                log.exception("catalog sync failed")

    async def _sync(self, fetch: bool, force: bool = False) -> None:
        """Take in lists other replicas stored, refresh due ones, then rebuild if needed."""
        changed = force
        for name in self._providers:
            entry = await self._store.get(name)
            if entry is not None and entry.fetched_at > self._stamps.get(name, -1.0):
                self._install(name, entry)
                changed = True
        if fetch:
            due = [n for n in self._providers if self._due(n)]
            results = await asyncio.gather(*(self._refresh(n) for n in due))
            changed = changed or any(results)
        published = await self._store.published_rates()
        if published != self._published:
            self._published, changed = published, True
        if changed or self._hard_stale_changed():
            await self._mirrors.assign(self._lists, self._missing)
            publish = self._rebuild()
            if publish:
                await self._store.publish_rates(publish)
                self._published.update(publish)

    def _hard_stale_changed(self) -> bool:
        stale = frozenset(n for n in self._lists if self._is_stale(n))
        if stale != self._stale:
            self._stale = stale
            return True
        return False

    def _is_stale(self, provider: str) -> bool:
        return self._clock.time() - self._stamps.get(provider, 0.0) > self._g.catalog_max_stale_s

    async def _refresh(self, name: str) -> bool:
        """Fetch one provider's list if this replica wins the lock (held until the list is
        stored; one another replica stored meanwhile is taken as it is). True if changed."""
        lock = keys.catalog_lock(name)
        token = await self._locks.acquire(lock, int(self._settings.provider(name).timeout_s * 3000))
        if token is None:
            return False
        try:
            entry = await self._store.get(name)
            if entry is None or entry.fetched_at <= self._stamps.get(name, -1.0) \
                    or self._clock.time() - entry.fetched_at >= self._ttl:
                entry = await self._fetch(name)  # else another replica refreshed it meanwhile
        finally:
            await self._locks.release(lock, token)
        if entry is None:
            return False
        self._install(name, entry)
        self._jitter.pop(name, None)
        return True

    async def _fetch(self, name: str) -> CatalogEntry | None:
        """The provider's list now, with what vanished from it, stored; None if it failed."""
        try:
            services = await self._providers[name].services()
        except ProviderError as exc:
            self._retry_at[name] = self._clock.time() + min(self._ttl, RETRY_FAILED_S)
            log.warning("catalog refresh failed, keeping the last list",
                        extra={"provider": name, "error": exc.message})
            return None
        now = self._clock.time()
        entry = CatalogEntry(fetched_at=now, services=services, missing=vanished(
            services, self._lists.get(name, {}), self._missing.get(name, {}), now,
            self._g.catalog_grace_s))
        await self._store.put(name, entry)
        return entry

    def _install(self, name: str, entry: CatalogEntry) -> None:
        # the first list a process takes in is not news: only what vanished since
        before = self._missing.get(name, {}) if name in self._stamps else None
        self._lists[name] = {s.service: s for s in entry.services}
        self._missing[name] = {m.service.service: m for m in entry.missing}
        self._stamps[name] = entry.fetched_at
        for sid, m in self._missing[name].items():
            if before is not None and sid not in before:
                self._events.emit(catalog_alerts.vanished(self._settings, name, m))

    def _rebuild(self) -> dict[int, Decimal]:
        """New views and `services` body; the markup rates to publish as confirmed."""
        live, remembered = sources(self._lists, self._missing, self._stamps,
                                   self._clock.time(), self._g)
        views: dict[int, ServiceView] = {}
        held: dict[int, tuple[Decimal, Decimal]] = {}
        publish: dict[int, Decimal] = {}
        mirrored = self._mirrors.settings(self._lists, self._missing)
        for svc in [*self._settings.services, *mirrored]:
            view = build_view(svc, live, remembered, self._converter, self._g,
                              self._currencies)
            if view is None:
                continue
            if svc.price is None:
                last = self._published.get(svc.id)
                limit = self._g.max_rate_change
                if last is not None and limit is not None and last > 0 and \
                        abs(view.rate - last) > last * limit:
                    # a jump past the guard (a provider's typo?) waits for an operator
                    held[svc.id] = (last, view.rate)
                    view.rate, view.max_cost = last, last / view.markup
                elif last != view.rate:
                    publish[svc.id] = view.rate
            views[svc.id] = view
        for sid, (last, new) in held.items():
            if self.held.get(sid) != (last, new):
                log.warning("rate change held for confirmation", extra={
                    "service": sid, "advertised": str(last), "computed": str(new)})
                self._events.emit(catalog_alerts.held(self._settings, sid, last, new))
        self.views, self.held = views, held
        self.body = ENCODER.encode([v.answer() for v in views.values()])
        self.etag = etag(self.body)
        self.version += 1
        return publish


def vanished(services: list[UpstreamService], before: Mapping[str, UpstreamService],
             missing: Mapping[str, Missing], now: float, grace_s: float) -> list[Missing]:
    """What a new list lacks: the services missing already (within `grace_s` of when
    they vanished) and those the list before had."""
    listed = {s.service for s in services}
    out = [m for m in missing.values()
           if m.service.service not in listed and now - m.since < grace_s]
    known = {m.service.service for m in out}
    out += [Missing(u, now) for sid, u in before.items() if sid not in listed and sid not in known]
    return out
