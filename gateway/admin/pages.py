"""The dashboard's HTML pages, rendered on the server (Jinja2 templates in
`templates/`), and the form POSTs behind their buttons.

Every page's guard (`gateway.admin.guard.page`) looks for a live session before the
page reads anything: without one, every page redirects to the login form alike,
whatever it would have shown. A POST's guard (`poster`) answers 401 without one, and
the POST needs the session's CSRF token (`checked_post`); what it changed is shown
on the next page as a one-time message, except a new client key, which is shown
once on the page that answers the POST and never stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from gateway.admin import changes, charts, queries
from gateway.admin.answers import AdminHTTPError
from gateway.admin.api import overview_data, route_json, route_of, search_args, service_json
from gateway.admin.explain import service_rows
from gateway.admin.guard import (
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_COOKIE,
    SESSION_TTL_S,
    actor_of,
    audit,
    checked_post,
    console,
    cookie,
    login,
    login_token,
    page,
    poster,
)
from gateway.admin.names import from_path, in_path
from gateway.admin.operations import AdminError, amount
from gateway.state.admin import Session

Req = Request[Any, Any, Any]
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make form POSTs say Origin: null
}
STATIC = {name: (Path(__file__).parent / "static" / name).read_bytes()
          for name in ("admin.css", "admin.js")}
_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}


async def _page(request: Req, template: str, **context: Any) -> Template:
    """A page for the operator whose session the route's guard found (`page`,
    `poster`)."""
    _, session = request.state.admin_session
    flash = None
    if session.flash:
        flash = {"text": session.flash, "error": session.flash_error}
        session.flash, session.flash_error = "", False
        await console(request).store(request).save_session(
            request.cookies[SESSION_COOKIE], session)
    r = console(request).resources(request)
    return Template(template_name=template, headers=HEADERS, context={
        "csrf": session.csrf, "flash": flash, "currency": r.settings.gateway.currency,
        "page": template.removesuffix(".html"), **context})


async def _flash(request: Req, token: str, session: Session, text: str, error: bool,
                 to: str) -> Redirect:
    session.flash, session.flash_error = text, error
    await console(request).store(request).save_session(token, session)
    return Redirect(to, status_code=303)


async def _form(request: Req) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


@get("/", include_in_schema=False, guards=[page])
async def overview_page(request: Req) -> Template:
    c = console(request)
    r = c.resources(request)
    days = await c.stats(request).days(r.clock.time())
    return await _page(request, "overview.html", o=await overview_data(request),
                       orders_svg=charts.orders_chart(days),
                       margin_svg=charts.margin_chart(days, r.settings.gateway.currency),
                       audit=await c.store(request).audit_log(20),
                       config=changes.reloader(request))


@get("/login", include_in_schema=False)
async def login_page(request: Req) -> Template:
    token = login_token()
    return Template(template_name="login.html", headers=HEADERS,
                    context={"csrf": token, "error": None},
                    cookies=[cookie(request, LOGIN_COOKIE, token, LOGIN_TTL_S)])


@post("/login", include_in_schema=False)
async def login_submit(request: Req) -> Template | Redirect:
    token = await login(request, await _form(request))
    if token is None:
        await audit(request, "-", "login", "-", False, "wrong admin key")
        again = login_token()
        return Template(template_name="login.html", headers=HEADERS, status_code=401,
                        context={"csrf": again, "error": "Wrong admin key"},
                        cookies=[cookie(request, LOGIN_COOKIE, again, LOGIN_TTL_S)])
    await audit(request, actor_of(token), "login", "-", True)
    return Redirect("/admin/", status_code=303, cookies=[
        cookie(request, SESSION_COOKIE, token, SESSION_TTL_S),
        cookie(request, LOGIN_COOKIE, "", 0)])


@post("/logout", include_in_schema=False, guards=[poster])
async def logout(request: Req) -> Redirect:
    token, actor, _ = checked_post(request, await _form(request))
    await console(request).store(request).close_session(token)
    await audit(request, actor, "logout", "-", True)
    return Redirect("/admin/login", status_code=303,
                    cookies=[cookie(request, SESSION_COOKIE, "", 0)])


@post("/reload", include_in_schema=False, guards=[poster])
async def reload_submit(request: Req) -> Redirect:
    token, actor, session = checked_post(request, await _form(request))
    try:
        result = await changes.reload(request, actor)
    except AdminError as exc:
        return await _flash(request, token, session, str(exc), True, "/admin/")
    text = ("Config reloaded: " if result.ok else "Config reload ") + result.text()
    return await _flash(request, token, session, text, not result.ok, "/admin/")


@get("/providers", include_in_schema=False, guards=[page])
async def providers_page(request: Req) -> Template:
    r = console(request).resources(request)
    return await _page(request, "providers.html", providers=await queries.providers(r),
                       score_window_d=r.settings.gateway.score_window_d)


@get("/orders", include_in_schema=False, guards=[page])
async def orders_page(request: Req) -> Template:
    q, filters, limit = search_args(request)
    searched = bool(q or any(filters.values()))
    result = await queries.search(console(request).resources(request), q, filters, limit)
    return await _page(request, "orders.html", q=q, filters=filters, result=result,
                       searched=searched)


@get("/orders/{order_id:int}", include_in_schema=False, guards=[page])
async def order_page(request: Req, order_id: FromPath[int]) -> Template:
    found = await queries.order(console(request).resources(request), order_id)
    if found is None:
        raise AdminHTTPError(404, f"No order {order_id}")
    return await _page(request, "order.html", o=found)


@post("/orders/{order_id:int}/resolve", include_in_schema=False, guards=[poster])
async def resolve_submit(request: Req, order_id: FromPath[int]) -> Redirect:
    form = await _form(request)
    token, actor, session = checked_post(request, form)
    placed = form.get("upstream_id", "") if form.get("outcome") == "placed" else None
    try:
        text = await changes.resolve(request, actor, order_id, placed)
    except AdminError as exc:
        return await _flash(request, token, session, str(exc), True, f"/admin/orders/{order_id}")
    return await _flash(request, token, session, text, False, f"/admin/orders/{order_id}")


@get("/catalog", include_in_schema=False, guards=[page])
async def catalog_page(request: Req) -> Template:
    r = console(request).resources(request)
    services = [service_json(s) for s in await service_rows(r)]
    p = request.query_params
    asked = {k: p.get(k, "") for k in ("service", "quantity", "client")}
    explained, error = None, None
    if asked["service"] or asked["quantity"]:
        try:
            explained = route_json(await route_of(request, p))
        except AdminHTTPError as exc:
            error = exc.message
    return await _page(request, "catalog.html", services=services,
                       held=[s for s in services if s["held"]], asked=asked,
                       route=explained, route_error=error)


@post("/catalog/{service_id:int}/confirm", include_in_schema=False, guards=[poster])
async def confirm_submit(request: Req, service_id: FromPath[int]) -> Redirect:
    token, actor, session = checked_post(request, await _form(request))
    try:
        text = await changes.confirm(request, actor, service_id)
    except AdminError as exc:
        return await _flash(request, token, session, str(exc), True, "/admin/catalog")
    return await _flash(request, token, session, text, False, "/admin/catalog")


@get("/clients", include_in_schema=False, guards=[page])
async def clients_page(request: Req) -> Template:
    r = console(request).resources(request)
    return await _page(request, "clients.html", clients=await queries.clients(r))


@get("/clients/{name:str}", include_in_schema=False, guards=[page])
async def client_page(request: Req, name: FromPath[str]) -> Template:
    name = from_path(name)
    found = await queries.client(console(request).resources(request), name)
    if found is None:
        raise AdminHTTPError(404, f"No client named {name!r}")
    return await _page(request, "client.html", c=found)


async def _show_key(request: Req, name: str, key: str, what: str) -> Template:
    return await _page(request, "key.html", name=name, key=key, what=what)


@post("/clients", include_in_schema=False, guards=[poster])
async def create_submit(request: Req) -> Template | Redirect:
    form = await _form(request)
    token, actor, session = checked_post(request, form)
    try:
        new = changes.new_client(form)
        key = await changes.create(request, actor, new)
    except AdminError as exc:
        return await _flash(request, token, session, str(exc), True, "/admin/clients")
    return await _show_key(request, new.name, key, "created")


@post("/clients/{name:str}/{change:str}", include_in_schema=False, guards=[poster])
async def client_submit(request: Req, name: FromPath[str],
                        change: FromPath[str]) -> Template | Redirect:
    name = from_path(name)
    form = await _form(request)
    token, actor, session = checked_post(request, form)
    back = f"/admin/clients/{in_path(name)}"
    try:
        if change == "rotate":
            return await _show_key(request, name, await changes.rotate(request, actor, name),
                                   "rotated")
        if change in ("disable", "enable"):
            text = await changes.set_active(request, actor, name, change == "enable")
        elif change == "topup":
            text = await changes.topup(request, actor, name, amount(form.get("amount", "")),
                                       form.get("note", ""))
        else:
            raise AdminHTTPError(404, "Not Found")
    except AdminError as exc:
        return await _flash(request, token, session, str(exc), True, back)
    return await _flash(request, token, session, text, False, back)


@get("/static/{name:str}", include_in_schema=False)
async def static(name: FromPath[str]) -> Response[bytes]:
    body = STATIC.get(name)
    if body is None:
        raise AdminHTTPError(404, "Not Found")
    return Response(body, media_type=_TYPES[name.rsplit(".", 1)[1]],
                    headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


HANDLERS = [overview_page, login_page, login_submit, logout, reload_submit, providers_page,
            orders_page, order_page, resolve_submit, catalog_page, confirm_submit,
            clients_page, client_page, create_submit, client_submit, static]
