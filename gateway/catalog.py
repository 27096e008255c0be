"""The gateway's catalog: upstream service lists cached in Redis, and the views built on them.

Each provider's list lives in Redis (`keys.catalog`) with the time it was
fetched. Every replica keeps the lists in memory and a background task:
- reloads a list when another replica stored a newer one;
- refreshes a list past its TTL, one replica at a time (a Redis lock);
- keeps the last good list when a refresh fails, so a provider being down never
  shrinks the `services` answer (panels disable services that vanish).
The request path reads only memory: the computed `ServiceView`s and the
pre-encoded `services` answer, rebuilt whenever a list changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from gateway import keys
from gateway.config import ServiceSettings, Settings
from gateway.errors import ProviderError
from gateway.models import CatalogEntry, UpstreamService
from gateway.money import Converter, rate_up, wire
from gateway.provider import ProviderClient
from gateway.router import Candidate, family
from gateway.store import Store

log = logging.getLogger("gateway.catalog")

POLL_S = 2.0
RETRY_FAILED_S = 30.0


@dataclass(slots=True)
class ServiceView:
    """A gateway service as the catalog sees it now."""

    settings: ServiceSettings
    candidates: list[Candidate]  # listed upstream and within price, cheapest first
    rate: Decimal
    min: int
    max: int
    type: str
    refill: bool
    cancel: bool
    dripfeed: bool
    form: Any

    @property
    def id(self) -> int:
        return self.settings.id

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f for f in ("refill", "cancel") if getattr(self, f))

    def answer(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "service": self.id,
            "name": self.settings.name,
            "type": self.type,
            "category": self.settings.category,
            "rate": wire(self.rate),
            "min": str(self.min),
            "max": str(self.max),
            "refill": self.refill,
            "cancel": self.cancel,
            "dripfeed": self.dripfeed,
        }
        if self.settings.desc:
            item["desc"] = self.settings.desc
        item["form"] = self.form
        return item


def _all_true(flags: list[bool | None]) -> bool:
    return bool(flags) and all(f is True for f in flags)


def build_view(svc: ServiceSettings, lists: Mapping[str, Mapping[str, UpstreamService]],
               converter: Converter, default_markup: Decimal,
               currencies: Mapping[str, str]) -> ServiceView | None:
    """The view of one gateway service, or None when no candidate is listed upstream."""
    candidates: list[Candidate] = []
    for ref in svc.upstreams:
        upstream = lists.get(ref.provider, {}).get(ref.service_id)
        if upstream is None:
            continue
        cost = converter.to_gateway(upstream.rate, currencies[ref.provider])
        if svc.price is not None and cost > svc.price:
            continue
        candidates.append(Candidate(ref.provider, upstream, cost))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c.cost_rate)
    markup = svc.markup if svc.markup is not None else default_markup
    rate = svc.price if svc.price is not None else rate_up(candidates[0].cost_rate * markup)
    ups = [c.upstream for c in candidates]
    form = next((u.form for u in ups if u.form), None)
    return ServiceView(
        settings=svc,
        candidates=candidates,
        rate=rate,
        min=min(u.min for u in ups),
        max=max(u.max for u in ups),
        type=svc.type,
        refill=svc.refill if svc.refill is not None else _all_true([u.refill for u in ups]),
        cancel=svc.cancel if svc.cancel is not None else _all_true([u.cancel for u in ups]),
        dripfeed=svc.dripfeed if svc.dripfeed is not None else any(u.dripfeed for u in ups),
        form=form if family(svc.type) != "default" else None,
    )


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Catalog:
    def __init__(self, settings: Settings, store: Store,
                 providers: Mapping[str, ProviderClient]) -> None:
        self._settings = settings
        self._store = store
        self._providers = providers
        self._converter = Converter(settings.gateway)
        self._currencies = {p.name: p.currency for p in settings.providers}
        self._ttl = settings.gateway.catalog_ttl_s
        self._lists: dict[str, dict[str, UpstreamService]] = {}
        self._stamps: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}  # after a failed refresh: not before then
        self._task: asyncio.Task[None] | None = None
        self._release = store.redis.register_script(_RELEASE)
        self.views: dict[int, ServiceView] = {}
        self.body: bytes = b"[]"
        self.version = 0  # bumped whenever views and body are rebuilt

    # --- lifecycle -----------------------------------------------------------

    async def start(self, wait_s: float) -> None:
        """Load cached lists; fetch missing or stale ones, waiting at most `wait_s`."""
        await self._sync(fetch=False)
        due = [name for name in self._providers if self._due(name)]
        if due:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.gather(*(self._refresh(n) for n in due))
        self._rebuild()
        self._task = asyncio.create_task(self._loop(), name="catalog-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the loop ------------------------------------------------------------

    def _due(self, provider: str) -> bool:
        now = time.time()
        return (now - self._stamps.get(provider, 0.0) >= self._ttl
                and now >= self._retry_at.get(provider, 0.0))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(POLL_S, self._ttl / 4))
            try:
                await self._sync(fetch=True)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("catalog sync failed")

    async def _sync(self, fetch: bool) -> None:
        changed = False
        for name in self._providers:
            entry = await self._store.get_catalog(name)
            if entry is not None and entry.fetched_at > self._stamps.get(name, -1.0):
                self._install(name, entry)
                changed = True
        if fetch:
            due = [n for n in self._providers if self._due(n)]
            results = await asyncio.gather(*(self._refresh(n) for n in due))
            changed = changed or any(results)
        if changed:
            self._rebuild()

    async def _refresh(self, name: str) -> bool:
        """Fetch one provider's list if this replica wins the lock. True if it changed."""
        token = secrets.token_hex(8)
        lock = keys.catalog_lock(name)
        timeout_ms = int(self._settings.provider(name).timeout_s * 3000)
        if not await self._store.try_lock(lock, token, timeout_ms):
            return False
        try:
            services = await self._providers[name].services()
        except ProviderError as exc:
            self._retry_at[name] = time.time() + min(self._ttl, RETRY_FAILED_S)
            log.warning("catalog refresh failed, keeping the last list",
                        extra={"provider": name, "error": exc.message})
            return False
        finally:
            await self._release(keys=[lock], args=[token])
        entry = CatalogEntry(fetched_at=time.time(), services=services)
        await self._store.put_catalog(name, entry)
        self._install(name, entry)
        return True

    def _install(self, name: str, entry: CatalogEntry) -> None:
        self._lists[name] = {s.service: s for s in entry.services}
        self._stamps[name] = entry.fetched_at

    def _rebuild(self) -> None:
        views: dict[int, ServiceView] = {}
        for svc in self._settings.services:
            view = build_view(svc, self._lists, self._converter,
                              self._settings.gateway.markup, self._currencies)
            if view is not None:
                views[svc.id] = view
        self.views = views
        self.body = msgspec.json.encode([v.answer() for v in views.values()])
        self.version += 1
