"""The catalog's alerts (`gateway.events`): what a replica says when a provider's
service vanishes from its list, or a markup rate change is held for an operator."""

from __future__ import annotations

from decimal import Decimal

from gateway.config import Settings
from gateway.events import Alert
from gateway.models import Missing


def vanished(settings: Settings, provider: str, m: Missing) -> Alert:
    u, grace = m.service, settings.gateway.catalog_grace_s
    used = [str(svc.id) for svc in settings.services
            if any(r.provider == provider and r.service_id == u.service for r in svc.upstreams)]
    return Alert(
        kind="service_vanished", subject=f"{provider}:{u.service}",
        once=f"service_vanished:{provider}:{u.service}:{int(m.since)}",
        message=f"{provider}: service {u.service} ({u.name}) vanished from its list; it "
                f"stays advertised, taking no orders, for {grace:g} s",
        details={"provider": provider, "service": u.service, "name": u.name,
                 "last_rate": str(u.rate), "grace_s": grace,
                 "gateway_services": ",".join(used)})


def held(settings: Settings, service_id: int, last: Decimal, new: Decimal) -> Alert:
    c, limit = settings.gateway.currency, settings.gateway.max_rate_change
    return Alert(
        kind="rate_held", subject=str(service_id), once=f"rate_held:{service_id}:{last}:{new}",
        repeat_s=settings.alerts.repeat_s,
        message=f"service {service_id}: rate change {last} -> {new} {c}/1000 held (more than "
                f"max_rate_change {limit}); confirm with "
                f"`smm-gateway catalog confirm {service_id}`",
        details={"service": service_id, "advertised": str(last), "computed": str(new),
                 "currency": c, "max_rate_change": str(limit)})
