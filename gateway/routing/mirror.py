"""`mirror:` entries: a provider's catalog (or part of it) offered as gateway
services, under gateway ids given once and kept for ever (`state.catalogs`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from gateway.config import MirrorSettings, ServiceSettings, Settings, UpstreamRef
from gateway.models import Missing, UpstreamService
from gateway.state.catalogs import Catalogs

Lists = Mapping[str, Mapping[str, UpstreamService]]
Gone = Mapping[str, Mapping[str, Missing]]


def mirrored(entry: MirrorSettings, services: Iterable[UpstreamService]) -> list[UpstreamService]:
    """The services of a provider that a `mirror:` entry exposes."""
    pattern = re.compile(entry.name_pattern) if entry.name_pattern else None
    return [u for u in services
            if (entry.categories is None or u.category in entry.categories)
            and (pattern is None or pattern.search(u.name))]


def _seen(entry: MirrorSettings, lists: Lists, missing: Gone) -> list[UpstreamService]:
    """Listed now or remembered within the grace period (a listed one wins)."""
    seen = {**{m.service.service: m.service for m in missing.get(entry.provider, {}).values()},
            **lists.get(entry.provider, {})}
    return mirrored(entry, seen.values())


class Mirrors:
    def __init__(self, settings: Settings, catalogs: Catalogs) -> None:
        self._entries = settings.mirror
        self._first_id = settings.gateway.mirror_id_start
        self._store = catalogs
        self._ids: dict[str, int] = {}  # "provider:upstream id" -> gateway id

    async def assign(self, lists: Lists, missing: Gone) -> None:
        """Give every mirrored service seen now its gateway id (once, in Redis)."""
        if not self._entries:
            return
        if not self._ids:
            self._ids = await self._store.mirror_ids()
        for entry in self._entries:
            # listed ones first: ids are handed out in this order
            current = [*lists.get(entry.provider, {}).values(),
                       *(m.service for m in missing.get(entry.provider, {}).values())]
            for u in mirrored(entry, current):
                field = f"{entry.provider}:{u.service}"
                if field not in self._ids:
                    self._ids[field] = await self._store.mirror_id(field, self._first_id)

    def settings(self, lists: Lists, missing: Gone) -> list[ServiceSettings]:
        """The mirrored services as if configured, by gateway id."""
        out: list[ServiceSettings] = []
        for entry in self._entries:
            for u in _seen(entry, lists, missing):
                gid = self._ids.get(f"{entry.provider}:{u.service}")
                if gid is None:
                    continue
                out.append(ServiceSettings(
                    id=gid, name=u.name, category=u.category, type=u.type, desc=u.desc,
                    markup=entry.markup,
                    upstreams=[UpstreamRef(provider=entry.provider, service=u.service)]))
        return sorted(out, key=lambda s: s.id)
