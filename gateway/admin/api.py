"""The JSON admin API under /admin/api/: what the pages show, for scripts and the
pages' own refresh. `Authorization: Bearer <gateway.admin_key>` (GETs also take a
dashboard session), checked by each route's guard before anything else runs
(`gateway.admin.guard.reader`, `.writer`); bodies of POSTs are JSON objects.
Errors are `{"error": ...}` (`gateway.admin.answers`). No answer holds a provider key
or a client key, except the new key that `POST /admin/api/clients` and `.../rotate`
show once. A client name in a path is percent-encoded (`gateway.admin.names`).

    GET  /admin/api/overview                 counters of today and the week, unknown orders
    GET  /admin/api/providers                breaker, balance, catalog age, services listed
    GET  /admin/api/orders?q=&client=&provider=&status=&limit=
    GET  /admin/api/orders/{id}              routing, status, money (margin, refunds)
    POST /admin/api/orders/{id}/resolve      {"placed": "<upstream id>"} | {"placed": null}
    GET  /admin/api/catalog                  services, candidates, the pick and why, held rates
    GET  /admin/api/route?service=&quantity=[&runs=][&client=]
                                             where that order would go now and why (`route`)
    POST /admin/api/catalog/{id}/confirm     advertise a held rate
    GET  /admin/api/clients, /admin/api/clients/{name}
    POST /admin/api/clients                  {"name", "mode", "markup", "credit"} -> its key
    POST /admin/api/clients/{name}/rotate | disable | enable
    POST /admin/api/clients/{name}/topup     {"amount": "10", "note": "..."}
    POST /admin/api/reload                   read the config file again, swap it in live
    GET  /admin/api/alerts                   the latest alerts, newest first
    GET  /admin/api/audit
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from gateway.admin import changes, queries
from gateway.admin.answers import JSON, AdminHTTPError
from gateway.admin.explain import Route, ServiceRow, route, service_rows
from gateway.admin.guard import actor as guard_actor
from gateway.admin.guard import console, reader, writer
from gateway.admin.names import from_path
from gateway.admin.operations import AdminError, amount
from gateway.money import wire
from gateway.wire import ENCODER

Req = Request[Any, Any, Any]
MAX_BODY = 16 * 1024


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(ENCODER.encode(data), status_code=status, media_type=JSON,
                    headers={"Cache-Control": "no-store"})


async def _body(request: Req) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise AdminHTTPError(400, "Request body too large")
    if not raw.strip():
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise AdminHTTPError(400, "The body must be a JSON object") from None
    except RecursionError:  # nested deeper than the decoder goes
        raise AdminHTTPError(400, "The body must be a JSON object, not nested that deep"
                             ) from None
    if not isinstance(data, dict):
        raise AdminHTTPError(400, "The body must be a JSON object")
    return data


async def overview_data(request: Req) -> dict[str, Any]:
    c = console(request)
    r = c.resources(request)
    now = r.clock.time()
    stats = c.stats(request)
    data = queries.overview(r, await stats.days(now), await stats.minutes(now),
                            await r.orders.unknown_orders())
    data["alerts"] = await recent_alerts(request, 20)
    return data


async def recent_alerts(request: Req, limit: int) -> list[dict[str, Any]]:
    """The newest alerts first (the ones webhooks were sent, `gateway.alerts`)."""
    alerts = await console(request).resources(request).alerts.recent(limit)
    return [msgspec.to_builtins(a) for a in alerts]


@get("/api/overview", include_in_schema=False, guards=[reader])
async def api_overview(request: Req) -> Response[bytes]:
    return _json(await overview_data(request))


@get("/api/providers", include_in_schema=False, guards=[reader])
async def api_providers(request: Req) -> Response[bytes]:
    return _json({"providers": await queries.providers(console(request).resources(request))})


def search_args(request: Req) -> tuple[str, dict[str, str], int]:
    p = request.query_params
    limit = p.get("limit", "")
    return (p.get("q", ""), {k: p.get(k, "") for k in ("client", "provider", "status")},
            int(limit) if limit.isdigit() else queries.SEARCH_LIMIT)


@get("/api/orders", include_in_schema=False, guards=[reader])
async def api_orders(request: Req) -> Response[bytes]:
    q, filters, limit = search_args(request)
    return _json(await queries.search(console(request).resources(request), q, filters, limit))


@get("/api/orders/{order_id:int}", include_in_schema=False, guards=[reader])
async def api_order(request: Req, order_id: FromPath[int]) -> Response[bytes]:
    found = await queries.order(console(request).resources(request), order_id)
    if found is None:
        raise AdminHTTPError(404, f"No order {order_id}")
    return _json(found)


@post("/api/orders/{order_id:int}/resolve", include_in_schema=False, guards=[writer])
async def api_resolve(request: Req, order_id: FromPath[int]) -> Response[bytes]:
    actor = guard_actor(request)
    body = await _body(request)
    if "placed" not in body:
        raise AdminHTTPError(400, 'Say {"placed": "<upstream order id>"} or {"placed": null}')
    placed = body["placed"]
    upstream: str | None = None
    if placed is True or not isinstance(placed, str | int | None):
        raise AdminHTTPError(400, "placed: the provider's order id, or null (not placed)")
    if placed is not None and placed is not False:
        upstream = str(placed)
    message = await changes.resolve(request, actor, order_id, upstream)
    return _json({"ok": True, "message": message})


def service_json(s: ServiceRow) -> dict[str, Any]:
    pick = s.pick
    return {
        "id": s.id, "name": s.name, "offered": s.offered, "type": s.type,
        "rate": wire(s.rate) if s.rate is not None else None, "min": s.min, "max": s.max,
        "held": {"advertised": wire(s.held[0]), "computed": wire(s.held[1])} if s.held else None,
        "pick": pick.provider if pick else None, "policy": s.policy,
        "candidates": [{"provider": row.provider, "upstream_service": row.upstream_service,
                        "cost_rate": wire(row.cost_rate) if row.cost_rate is not None else None,
                        "breaker": row.breaker, "picked": row.picked, "skipped": row.reason,
                        "policy": row.judged.as_json() if row.judged else None,
                        "explored": row.explored,
                        "score": row.score.as_json() if row.score else None}
                       for row in s.rows],
    }


def _number(p: Any, name: str, required: bool) -> int | None:
    raw = str(p.get(name, "")).strip()
    if not raw and not required:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 10**12:
        raise AdminHTTPError(400, f"{name}: a positive whole number is required")
    return int(raw)


async def route_of(request: Req, p: Any) -> Route:
    """The route explanation asked for by `p` (service, quantity, runs, client), or a
    400 naming what is wrong."""
    service = _number(p, "service", True)
    quantity = _number(p, "quantity", True)
    assert service is not None and quantity is not None
    runs = _number(p, "runs", False)
    r = console(request).resources(request)
    name = str(p.get("client", "")).strip()
    client = None
    if name:
        client = await r.directory.get(name)
        if client is None:
            raise AdminHTTPError(400, f"No client named {name!r}")
    found = await route(r, service, quantity, runs, client)
    if found is None:
        raise AdminHTTPError(400, f"service {service}: not in the catalog")
    return found


def route_json(x: Route) -> dict[str, Any]:
    taken = x.taken
    return {
        "service": x.service, "name": x.name, "offered": x.offered, "quantity": x.quantity,
        "runs": x.runs, "client": x.client,
        "rate": wire(x.rate) if x.rate is not None else None, "min": x.min, "max": x.max,
        "in_range": x.in_range,
        "held": {"advertised": wire(x.held[0]), "computed": wire(x.held[1])} if x.held else None,
        "policy": x.policy or "cheapest", "taken": taken.provider if taken else None,
        "candidates": [{"provider": s.provider, "upstream_service": s.upstream_service,
                        "cost_rate": wire(s.cost_rate), "cost": wire(s.cost),
                        "min": s.min, "max": s.max, "breaker": s.breaker,
                        "verdict": s.verdict, "reason": s.reason, "explored": s.explored,
                        "policy": s.judged.as_json() if s.judged else None,
                        "judgement": s.judged.words() if s.judged else None,
                        "score": s.score.as_json() if s.score else None,
                        "score_words": s.score.summary() if s.score else None}
                       for s in x.steps],
        "unlisted": [{"provider": p, "upstream_service": sid, "reason": why}
                     for p, sid, why in x.unlisted],
    }


@get("/api/route", include_in_schema=False, guards=[reader])
async def api_route(request: Req) -> Response[bytes]:
    r = console(request).resources(request)
    found = await route_of(request, request.query_params)
    return _json({"currency": r.settings.gateway.currency} | route_json(found))


@get("/api/catalog", include_in_schema=False, guards=[reader])
async def api_catalog(request: Req) -> Response[bytes]:
    r = console(request).resources(request)
    return _json({"currency": r.settings.gateway.currency,
                  "services": [service_json(s) for s in await service_rows(r)]})


@post("/api/catalog/{service_id:int}/confirm", include_in_schema=False, guards=[writer])
async def api_confirm(request: Req, service_id: FromPath[int]) -> Response[bytes]:
    actor = guard_actor(request)
    return _json({"ok": True, "message": await changes.confirm(request, actor, service_id)})


@get("/api/clients", include_in_schema=False, guards=[reader])
async def api_clients(request: Req) -> Response[bytes]:
    return _json({"clients": await queries.clients(console(request).resources(request))})


@get("/api/clients/{name:str}", include_in_schema=False, guards=[reader])
async def api_client(request: Req, name: FromPath[str]) -> Response[bytes]:
    name = from_path(name)
    found = await queries.client(console(request).resources(request), name)
    if found is None:
        raise AdminHTTPError(404, f"No client named {name!r}")
    return _json(found)


@post("/api/clients", include_in_schema=False, guards=[writer])
async def api_create(request: Req) -> Response[bytes]:
    actor = guard_actor(request)
    new = changes.new_client(await _body(request))
    key = await changes.create(request, actor, new)
    return _json({"ok": True, "name": new.name, "key": key,
                  "note": "the key is shown once; only its SHA-256 is stored"}, status=201)


@post("/api/clients/{name:str}/{change:str}", include_in_schema=False, guards=[writer])
async def api_client_change(request: Req, name: FromPath[str],
                            change: FromPath[str]) -> Response[bytes]:
    actor, name = guard_actor(request), from_path(name)
    if change == "rotate":
        key = await changes.rotate(request, actor, name)
        return _json({"ok": True, "name": name, "key": key,
                      "note": "the key is shown once; the old key no longer works"})
    if change in ("disable", "enable"):
        message = await changes.set_active(request, actor, name, change == "enable")
        return _json({"ok": True, "message": message})
    if change == "topup":
        body = await _body(request)
        value = amount(str(body.get("amount", "")))
        message = await changes.topup(request, actor, name, value, str(body.get("note", "")))
        return _json({"ok": True, "message": message})
    raise AdminHTTPError(404, "Not Found")


@post("/api/reload", include_in_schema=False, guards=[writer])
async def api_reload(request: Req) -> Response[bytes]:
    """200 with what changed; 422 with every error when the file is refused (the
    running config stays)."""
    result = await changes.reload(request, guard_actor(request))
    return _json(result.as_dict(), status=200 if result.ok else 422)


@get("/api/alerts", include_in_schema=False, guards=[reader])
async def api_alerts(request: Req) -> Response[bytes]:
    return _json({"alerts": await recent_alerts(request, 200)})


@get("/api/audit", include_in_schema=False, guards=[reader])
async def api_audit(request: Req) -> Response[bytes]:
    return _json({"audit": await console(request).store(request).audit_log(200)})


HANDLERS = [api_overview, api_providers, api_orders, api_order, api_resolve, api_route, api_catalog,
            api_confirm, api_clients, api_client, api_create, api_client_change, api_reload,
            api_alerts, api_audit]
__all__ = ["HANDLERS", "AdminError", "overview_data", "route_json", "route_of", "search_args",
           "service_json"]
