"""Who may use the dashboard, and the trail of what they did.

- The JSON API takes `Authorization: Bearer <gateway.admin_key>` (compared with
  `hmac.compare_digest`); its GETs also take a dashboard session (the pages' script
  reads them), its POSTs only the bearer key.
- The pages: a login form posts the admin key; a right key opens a session, a random
  token in an HttpOnly, SameSite=Strict cookie scoped to /admin (Secure when the
  request came over https, directly or from a trusted proxy that says so). Redis
  keeps only the token's SHA-256 (`gateway.state.admin`), for 12 hours.
- CSRF: every page POST carries the session's CSRF token in a hidden field, compared
  in constant time; a POST whose Origin names another host is refused too. The login
  form is guarded the same way by a token in a short-lived cookie (double submit).
- Failed logins and wrong bearer keys are counted per client address: after
  MAX_FAILURES in FAILURE_WINDOW_S that address is refused (429), even with the right
  key, until the window ends. A key is compared, then its verdict is counted and
  checked in one step in Redis (`AdminStore.attempt`), so racing requests cannot
  have more than MAX_FAILURES wrong keys answered. These counts are the operator's
  own: an address the API has blocked for bad client keys still reaches /admin/.
- A session cookie is no key: it is looked up, never counted, and a live one is
  served from an address that is locked out (an operator behind a shared address).
- Every action is one JSON line on the `gateway.admin` logger and an entry in the
  audit list in Redis, which the Overview page shows.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers import BaseRouteHandler

from gateway.admin.answers import AdminHTTPError, LoginRequired
from gateway.digest import sha256_hex
from gateway.errors import StoreUnavailable
from gateway.state.admin import SESSION_TTL_S, AdminStore, Session
from gateway.state.stats import Stats
from gateway.wiring import Resources

log = logging.getLogger("gateway.admin")

SESSION_COOKIE = "gw_admin"
LOGIN_COOKIE = "gw_admin_login"
LOGIN_TTL_S = 1800
COOKIE_PATH = "/admin"
AddressOf = Callable[[Request[Any, Any, Any]], str]


@dataclass
class Console:
    """The dashboard's handle on one app: its key and its state, built at first use."""

    admin_key: str
    address_of: AddressOf
    _store: AdminStore | None = field(default=None, repr=False)
    _stats: Stats | None = field(default=None, repr=False)

    def resources(self, request: Request[Any, Any, Any]) -> Resources:
        r: Resources = request.app.state.resources
        return r

    def store(self, request: Request[Any, Any, Any]) -> AdminStore:
        if self._store is None:
            self._store = AdminStore(self.resources(request).redis)
        return self._store

    def stats(self, request: Request[Any, Any, Any]) -> Stats:
        if self._stats is None:
            self._stats = Stats(self.resources(request).redis)
        return self._stats

    def key_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.admin_key.encode())


def console(request: Request[Any, Any, Any]) -> Console:
    c: Console = request.route_handler.opt["admin"]
    return c


def is_https(request: Request[Any, Any, Any]) -> bool:
    """Over TLS to this process, or from a trusted proxy that says it was."""
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if proto != "https" or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    networks = getattr(request.app.state, "trusted_networks", ())
    return any(peer in net for net in networks)


def cookie(request: Request[Any, Any, Any], name: str, value: str, max_age: int) -> Cookie:
    """HttpOnly, SameSite=Strict, scoped to /admin; Secure when the request is https."""
    return Cookie(key=name, value=value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                  samesite="strict", secure=is_https(request))


async def _decided(request: Request[Any, Any, Any], c: Console, right: bool,
                   via: str) -> None:
    """The verdict on a key just compared may be answered: counted (a wrong one) and
    checked against the address's failures in one step in Redis; else a 429, whatever
    the key (`AdminStore.attempt`)."""
    address = c.address_of(request)
    refused_ms = await c.store(request).attempt(address, wrong=not right)
    if refused_ms:
        raise AdminHTTPError(429, "Too many failed attempts; try again in a few minutes")
    if not right:
        log.warning("admin: wrong key", extra={"via": via, "address": address})


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer ":
        return None
    return auth[7:].strip()


async def api_actor(request: Request[Any, Any, Any], write: bool) -> str:
    """Who makes this API call ("api" or a session), or a 401/429."""
    c = console(request)
    presented = _bearer(request)
    if presented is not None:
        right = c.key_matches(presented)
        await _decided(request, c, right, "bearer")
        if right:
            return "api"
        raise AdminHTTPError(401, "Invalid admin key")
    if not write:
        found = await session_of(request)
        if found is not None:
            return found[0]
    raise AdminHTTPError(401, "Authorization: Bearer <admin key> is required")


Connection = ASGIConnection[Any, Any, Any, Any]


async def reader(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard of the API's GETs (the bearer key or a session), before any work: its
    actor on `connection.state.admin_actor`."""
    connection.state.admin_actor = await api_actor(_request(connection), write=False)


async def writer(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard of the API's POSTs (the bearer key only), before any work."""
    connection.state.admin_actor = await api_actor(_request(connection), write=True)


async def page(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard of every page: a live session before any work, else LoginRequired (a
    redirect to the login form, the same whatever the page or its id). The session on
    `connection.state.admin_session`."""
    found = await session_of(_request(connection))
    if found is None:
        raise LoginRequired()
    connection.state.admin_session = found


def actor(request: Request[Any, Any, Any]) -> str:
    """Who makes this API call, as its guard found."""
    found: str = request.state.admin_actor
    return found


def _request(connection: Connection) -> Request[Any, Any, Any]:
    assert isinstance(connection, Request)  # the guards are on HTTP routes only
    return connection


async def session_of(request: Request[Any, Any, Any]) -> tuple[str, Session] | None:
    """(actor, session) of the request's session cookie, if it is a live one."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > 128:
        return None
    session = await console(request).store(request).session(token)
    if session is None:
        return None
    return actor_of(token), session


def actor_of(token: str) -> str:
    """A session's name in logs: never the token itself."""
    return "session:" + sha256_hex(token)[:8]


def same_origin(request: Request[Any, Any, Any]) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not every client sends it: the CSRF token still decides
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def poster(connection: Connection, _: BaseRouteHandler) -> None:
    """Guard of every page POST, before any work (its form is not read yet): 403 for
    a foreign origin, 401 without a live session. The session on
    `connection.state.admin_session`; `checked_post` checks the form's CSRF token."""
    request = _request(connection)
    if not same_origin(request):
        raise AdminHTTPError(403, "Cross-origin request refused")
    found = await session_of(request)
    if found is None:
        raise AdminHTTPError(401, "Not logged in (or the session expired): log in again")
    connection.state.admin_session = found


def checked_post(request: Request[Any, Any, Any],
                 form: dict[str, str]) -> tuple[str, str, Session]:
    """A page POST its guard (`poster`) let in: (token, actor, session) once the form
    carries the session's CSRF token; else 403 (missing or wrong)."""
    actor, session = request.state.admin_session
    sent = form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise AdminHTTPError(403, "CSRF token missing or wrong: reload the page and retry")
    return request.cookies[SESSION_COOKIE], actor, session


async def login(request: Request[Any, Any, Any], form: dict[str, str]) -> str | None:
    """Check a login form: the new session's token, or None (wrong key). The form's
    CSRF token must match its cookie (403 otherwise)."""
    c = console(request)
    if not same_origin(request):
        raise AdminHTTPError(403, "Cross-origin request refused")
    sent, cookie = form.get("csrf", ""), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        raise AdminHTTPError(403, "CSRF token missing or wrong: reload the login page")
    right = c.key_matches(form.get("key", ""))
    await _decided(request, c, right, "login")
    if not right:
        return None
    token, _ = await c.store(request).open_session(c.resources(request).clock.time())
    return token


def login_token() -> str:
    return secrets.token_urlsafe(24)


async def audit(request: Request[Any, Any, Any], actor: str, action: str, target: str,
                ok: bool, detail: str = "") -> None:
    """One JSON log line and one audit entry for a dashboard action."""
    c = console(request)
    entry = {"t": round(c.resources(request).clock.time(), 3), "actor": actor,
             "address": c.address_of(request), "action": action, "target": target,
             "ok": ok, "detail": detail}
    log.info("admin action", extra={k: v for k, v in entry.items() if k != "t"})
    try:
        await c.store(request).audit(entry)
    except StoreUnavailable as exc:
        log.warning("admin: audit entry not stored", extra={"error": exc.message})


__all__ = ["SESSION_TTL_S", "Console", "actor", "actor_of", "api_actor", "audit",
           "checked_post", "login", "page", "poster", "reader", "session_of", "writer"]
