"""The dashboard's changes, audited: each runs one `gateway.admin.operations` function
on the app's resources and records who did what, and whether it worked. The JSON
API and the pages both come here."""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from litestar import Request

from gateway.admin import operations as ops
from gateway.admin.guard import audit, console
from gateway.config import ReloadResult
from gateway.money import wire

T = TypeVar("T")
Req = Request[Any, Any, Any]


class Reloads(Protocol):
    """The app's config reloader (`gateway.edge.reload.Reloader`, on `app.state`)."""

    path: Any
    loaded_at: float
    last: ReloadResult | None

    async def requested(self, actor: str, address: str) -> ReloadResult: ...


def reloader(request: Req) -> Reloads | None:
    found: Reloads | None = getattr(request.app.state, "reloader", None)
    return found


async def reload(request: Req, actor: str) -> ReloadResult:
    """Read the config file again and swap it in (every worker); the reloader logs the
    result and records it in the audit list, refused or not."""
    found = reloader(request)
    if found is None:
        raise ops.AdminError("this gateway cannot reload its config")
    return await found.requested(actor, console(request).address_of(request))


async def _audited(request: Req, actor: str, action: str, target: str,
                   work: Awaitable[T], detail: str = "") -> T:
    try:
        result = await work
    except ops.AdminError as exc:
        await audit(request, actor, action, target, False, str(exc))
        raise
    await audit(request, actor, action, target, True,
                detail or (result if isinstance(result, str) else ""))
    return result


async def resolve(request: Req, actor: str, order_id: int, placed: str | None) -> str:
    r = console(request).resources(request)
    return await _audited(request, actor, "resolve", str(order_id),
                          ops.resolve_order(r.orders, r.ledger, order_id, placed))


async def confirm(request: Req, actor: str, service_id: int) -> str:
    r = console(request).resources(request)
    if not any(s.id == service_id for s in r.settings.services) and \
            service_id not in r.catalog.views:
        await audit(request, actor, "confirm", str(service_id), False, "no such service")
        raise ops.AdminError(f"no service {service_id}")
    message = await _audited(request, actor, "confirm", str(service_id),
                             ops.confirm_rate(r.catalogs, service_id))
    await r.catalog.sync()  # this replica advertises the new rate at once
    return message


async def create(request: Req, actor: str, new: ops.NewClient) -> str:
    """The new client's key: shown once, never logged."""
    r = console(request).resources(request)
    credit = f", credit {wire(new.credit)}" if new.credit else ""
    return await _audited(request, actor, "client_create", new.name,
                          ops.create_client(r.directory, r.ledger, new),
                          detail=f"client {new.name} created ({new.mode}{credit})")


async def rotate(request: Req, actor: str, name: str) -> str:
    """The client's new key: shown once, never logged."""
    r = console(request).resources(request)
    return await _audited(request, actor, "client_rotate", name,
                          ops.rotate(r.directory, name),
                          detail=f"client {name}: new key, the old one no longer works")


async def set_active(request: Req, actor: str, name: str, active: bool) -> str:
    r = console(request).resources(request)
    return await _audited(request, actor, "client_enable" if active else "client_disable",
                          name, ops.set_active(r.directory, name, active))


async def topup(request: Req, actor: str, name: str, value: Decimal, note: str) -> str:
    r = console(request).resources(request)
    return await _audited(request, actor, "client_topup", name,
                          ops.topup(r.directory, r.ledger, name, value, note))


def new_client(fields: dict[str, Any]) -> ops.NewClient:
    """A create request's fields (JSON or form), checked."""
    mode = str(fields.get("mode") or "ledger")
    if mode not in ("ledger", "operator"):
        raise ops.AdminError("mode is ledger or operator")
    markup = str(fields.get("markup") or "").strip()
    credit = str(fields.get("credit") or "").strip()
    return ops.NewClient(name=str(fields.get("name") or ""),
                         mode="ledger" if mode == "ledger" else "operator",
                         markup=ops.amount(markup) if markup else None,
                         credit=ops.amount(credit) if credit else None)
