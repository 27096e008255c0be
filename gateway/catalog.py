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
import hashlib
import logging
import random
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from gateway import keys
from gateway.config import (
    GatewaySettings,
    MirrorSettings,
    ServiceSettings,
    Settings,
    UpstreamRef,
)
from gateway.errors import ProviderError
from gateway.models import CatalogEntry, Missing, UpstreamService
from gateway.money import Converter, rate_up, wire
from gateway.provider import ProviderClient
from gateway.router import Candidate, family
from gateway.store import Store

log = logging.getLogger("gateway.catalog")

POLL_S = 2.0
RETRY_FAILED_S = 30.0
JITTER = 0.1  # a list comes due between 1x and 1.1x its TTL


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
    max_cost: Decimal | None = None  # routing never pays more per 1000 than this
    markup: Decimal = Decimal(1)

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
               remembered: Mapping[str, Mapping[str, UpstreamService]],
               converter: Converter, gateway: GatewaySettings,
               currencies: Mapping[str, str]) -> ServiceView | None:
    """The view of one gateway service; None when no candidate is listed or remembered.

    Candidates a provider lists are routable. Those it stopped listing within the
    grace period (`remembered`) keep the service advertised, at its last known
    price, but take no orders.
    """
    def candidates(source: Mapping[str, Mapping[str, UpstreamService]]) -> list[Candidate]:
        out = []
        for ref in svc.upstreams:
            upstream = source.get(ref.provider, {}).get(ref.service_id)
            if upstream is not None:
                cost = converter.to_gateway(upstream.rate, currencies[ref.provider])
                out.append(Candidate(ref.provider, upstream, cost))
        return sorted(out, key=lambda c: c.cost_rate)

    live = candidates(lists)
    basis = live or candidates(remembered)
    if not basis:
        return None
    max_cost = None
    if svc.price is not None:
        max_cost = svc.price * (1 - gateway.min_margin)
        basis = [c for c in basis if c.cost_rate <= max_cost] or basis
    markup = svc.markup if svc.markup is not None else gateway.markup
    rate = svc.price if svc.price is not None else rate_up(basis[0].cost_rate * markup)
    ups = [c.upstream for c in basis]
    form = next((u.form for u in ups if u.form), None)
    return ServiceView(
        settings=svc,
        candidates=live,
        rate=rate,
        min=min(u.min for u in ups),
        max=max(u.max for u in ups),
        type=svc.type,
        refill=svc.refill if svc.refill is not None else _all_true([u.refill for u in ups]),
        cancel=svc.cancel if svc.cancel is not None else _all_true([u.cancel for u in ups]),
        dripfeed=svc.dripfeed if svc.dripfeed is not None else any(u.dripfeed for u in ups),
        form=form if family(svc.type) != "default" else None,
        max_cost=max_cost,
        markup=markup,
    )


def mirrored(entry: MirrorSettings, services: Iterable[UpstreamService]) -> list[UpstreamService]:
    """The services of a provider that a `mirror:` entry exposes."""
    pattern = re.compile(entry.name_pattern) if entry.name_pattern else None
    return [u for u in services
            if (entry.categories is None or u.category in entry.categories)
            and (pattern is None or pattern.search(u.name))]


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: mirror ids hash, mirror sequence. ARGV: field, first id. An id once, for ever.
_MIRROR_ID = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return id end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < tonumber(ARGV[2]) - 1 then redis.call('SET', KEYS[2], tonumber(ARGV[2]) - 1) end
id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
"""


class Catalog:
    def __init__(self, settings: Settings, store: Store,
                 providers: Mapping[str, ProviderClient]) -> None:
        self._settings = settings
        self._g = settings.gateway
        self._store = store
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
        self._mirror_ids: dict[str, int] = {}
        self._stale: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None
        self._release = store.redis.register_script(_RELEASE)
        self._mirror_id = store.redis.register_script(_MIRROR_ID)
        self.views: dict[int, ServiceView] = {}
        self.held: dict[int, tuple[Decimal, Decimal]] = {}  # id -> (advertised, computed)
        self.body: bytes = b"[]"
        self.etag = ""
        self.version = 0  # bumped whenever views and body are rebuilt

    # --- lifecycle -----------------------------------------------------------

    async def start(self, wait_s: float, loop: bool = True) -> None:
        """Load cached lists; fetch missing or stale ones, waiting at most `wait_s`."""
        await self._sync(fetch=False, force=True)
        due = [name for name in self._providers if self._due(name)]
        if due:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.gather(*(self._refresh(n) for n in due))
            await self._sync(fetch=False, force=True)
        if loop:
            self._task = asyncio.create_task(self._loop(), name="catalog-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def fetched_at(self, provider: str) -> float | None:
        return self._stamps.get(provider)

    # --- the loop ------------------------------------------------------------

    def _due(self, provider: str) -> bool:
        now = time.time()
        age = now - self._stamps.get(provider, 0.0)
        # jitter: replicas and providers do not all come due in the same second
        jitter = self._jitter.setdefault(provider, random.uniform(0, JITTER))
        return age >= self._ttl * (1 + jitter) and now >= self._retry_at.get(provider, 0.0)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(POLL_S, self._ttl / 4))
            try:
                await self._sync(fetch=True)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("catalog sync failed")

    async def _sync(self, fetch: bool, force: bool = False) -> None:
        """Take in lists other replicas stored, refresh due ones, then rebuild if needed."""
        changed = force
        for name in self._providers:
            entry = await self._store.get_catalog(name)
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
            await self._assign_mirror_ids()
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
        return time.time() - self._stamps.get(provider, 0.0) > self._g.catalog_max_stale_s

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
        now = time.time()
        listed = {s.service for s in services}
        missing = [m for m in self._missing.get(name, {}).values()
                   if m.service.service not in listed and now - m.since < self._g.catalog_grace_s]
        known = {m.service.service for m in missing}
        missing += [Missing(u, now) for sid, u in self._lists.get(name, {}).items()
                    if sid not in listed and sid not in known]
        entry = CatalogEntry(fetched_at=now, services=services, missing=missing)
        await self._store.put_catalog(name, entry)
        self._install(name, entry)
        self._jitter.pop(name, None)
        return True

    def _install(self, name: str, entry: CatalogEntry) -> None:
        self._lists[name] = {s.service: s for s in entry.services}
        self._missing[name] = {m.service.service: m for m in entry.missing}
        self._stamps[name] = entry.fetched_at

    # --- building views ------------------------------------------------------

    def _sources(self) -> tuple[dict[str, dict[str, UpstreamService]],
                                dict[str, dict[str, UpstreamService]]]:
        """(routable lists, remembered-within-grace lists) per provider."""
        now = time.time()
        live: dict[str, dict[str, UpstreamService]] = {}
        remembered: dict[str, dict[str, UpstreamService]] = {}
        for name, services in self._lists.items():
            gone = {sid: m.service for sid, m in self._missing.get(name, {}).items()
                    if now - m.since < self._g.catalog_grace_s}
            if self._is_stale(name):
                stale_since = self._stamps[name] + self._g.catalog_max_stale_s
                if now - stale_since < self._g.catalog_grace_s:
                    gone.update(services)
                live[name] = {}
            else:
                live[name] = services
            remembered[name] = gone
        return live, remembered

    def _mirror_settings(self) -> list[ServiceSettings]:
        out: list[ServiceSettings] = []
        for entry in self._settings.mirror:
            seen = {**{m.service.service: m.service
                       for m in self._missing.get(entry.provider, {}).values()},
                    **self._lists.get(entry.provider, {})}
            for u in mirrored(entry, seen.values()):
                gid = self._mirror_ids.get(f"{entry.provider}:{u.service}")
                if gid is None:
                    continue
                out.append(ServiceSettings(
                    id=gid, name=u.name, category=u.category, type=u.type, desc=u.desc,
                    markup=entry.markup,
                    upstreams=[UpstreamRef(provider=entry.provider, service=u.service)]))
        return sorted(out, key=lambda s: s.id)

    async def _assign_mirror_ids(self) -> None:
        if not self._settings.mirror:
            return
        if not self._mirror_ids:
            self._mirror_ids = await self._store.mirror_ids()
        for entry in self._settings.mirror:
            current = [*self._lists.get(entry.provider, {}).values(),
                       *(m.service for m in self._missing.get(entry.provider, {}).values())]
            for u in mirrored(entry, current):
                field = f"{entry.provider}:{u.service}"
                if field not in self._mirror_ids:
                    gid = await self._mirror_id(keys=[keys.MIRROR_IDS, keys.MIRROR_SEQ],
                                                args=[field, self._g.mirror_id_start])
                    self._mirror_ids[field] = int(gid)

    def _rebuild(self) -> dict[int, Decimal]:
        """New views and `services` body; the markup rates to publish as confirmed."""
        live, remembered = self._sources()
        views: dict[int, ServiceView] = {}
        held: dict[int, tuple[Decimal, Decimal]] = {}
        publish: dict[int, Decimal] = {}
        for svc in [*self._settings.services, *self._mirror_settings()]:
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
        self.views, self.held = views, held
        self.body = msgspec.json.encode([v.answer() for v in views.values()])
        self.etag = etag(self.body)
        self.version += 1
        return publish
