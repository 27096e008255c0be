"""The HTTP edge: one SMM API v2 endpoint, request parsing, auth, and the error table.

Data path: edge (here) -> auth -> action (`gateway.actions`) -> router ->
provider client -> store. This module knows HTTP; nothing after it does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException

from gateway.actions import Gateway
from gateway.auth import fingerprint, presented_key
from gateway.catalog import Catalog
from gateway.clients import ClientRecord, Directory
from gateway.config import Settings
from gateway.errors import AuthError, ClientError, NotFound
from gateway.health import Balances, Breakers
from gateway.limits import RateLimiter
from gateway.provider import ProviderClient
from gateway.store import Store, connect

log = logging.getLogger("gateway.app")

MAX_BODY = 64 * 1024
JSON = "application/json"
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

Handler = Callable[[Gateway, ClientRecord, Mapping[str, str]], Awaitable[Any]]


async def _services(gw: Gateway, client: ClientRecord,
                    fields: Mapping[str, str]) -> tuple[bytes, str]:
    return gw.services(client)


ACTIONS: dict[str, Handler] = {
    "services": _services,
    "add": lambda gw, c, f: gw.add(c, f),
    "status": lambda gw, c, f: gw.status(c.name, f),
    "refill": lambda gw, c, f: gw.refill(c.name, f),
    "refill_status": lambda gw, c, f: gw.refill_status(c.name, f),
    "cancel": lambda gw, c, f: gw.cancel(c.name, f),
    "balance": lambda gw, c, f: gw.balance(c),
}


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return ",".join(_field_text(v) for v in value)
    return _enc.encode(value).decode()


async def read_fields(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The request's fields from a form, multipart or JSON-object body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        return {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ClientError("Request body too large (64 KiB at most)")
    if ctype in ("application/x-www-form-urlencoded", "") or ctype.startswith("text/plain"):
        try:
            return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except ValueError:
            raise ClientError("Incorrect request") from None
    if ctype == JSON or ctype.endswith("+json"):
        try:
            obj = _dec.decode(body) if body.strip() else {}
        except msgspec.DecodeError:
            raise ClientError("Incorrect request: body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise ClientError("Incorrect request: JSON body must be an object")
        return {str(k): _field_text(v) for k, v in obj.items() if v is not None}
    raise ClientError("Unsupported content type: send application/x-www-form-urlencoded")


def _answer(request: Request[Any, Any, Any], message: str, status: int) -> Response[bytes]:
    if request.app.state.always_200:
        status = 200
    return Response(_enc.encode({"error": message}), status_code=status, media_type=JSON)


def _on_client_error(request: Request[Any, Any, Any], exc: ClientError) -> Response[bytes]:
    return _answer(request, exc.message, exc.status_code)


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code in (404, 405):
        return _answer(request, "Not Found", 404)
    if exc.status_code == 413:
        return _answer(request, "Request body too large (64 KiB at most)", 400)
    return _answer(request, "Incorrect request", 400)


def _on_crash(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error", exc_info=exc)
    return _answer(request, "Temporary error, try again later", 503)


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False)
async def api_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    address = request.client.host if request.client else "-"
    state.limiter.refuse_blocked(address)
    fields = await read_fields(request)
    key = presented_key(fields, request.headers)
    client = await state.directory.identify(key)
    if client is None:
        log.info("authentication failed", extra={
            "address": address, "key": fingerprint(key) if key else None})
        await state.limiter.failed_auth(address)
        raise AuthError()
    if client.rate_limit:
        await state.limiter.check(client.name, client.rate_limit, client.burst)
    idem = request.headers.get("idempotency-key")
    if idem:
        fields["idempotency_key"] = idem
    action = fields.get("action", "").strip()
    if not action:
        raise ClientError("Missing action")
    handler = ACTIONS.get(action)
    if handler is None:
        raise ClientError("Incorrect request: unknown action")
    result = await handler(state.gateway, client, fields)
    if isinstance(result, tuple):  # pre-encoded with its ETag (`services`)
        body, tag = result
        if request.headers.get("if-none-match") == tag:
            return Response(b"", status_code=304, headers={"ETag": tag})
        return Response(body, media_type=JSON, headers={"ETag": tag})
    return Response(_enc.encode(result), media_type=JSON)


@get(["/api/v2", "/api/v2/"], include_in_schema=False)
async def api_v2_get() -> None:
    raise NotFound()


@get("/healthz", include_in_schema=False)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    await request.app.state.gateway.store.ping()
    return Response(b'{"ok":true}', media_type=JSON)


def create_app(settings: Settings, redis_url: str) -> Litestar:
    """The ASGI app. Opens Redis, provider clients and the catalog at start; closes them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        store = Store(connect(redis_url))
        providers = {p.name: ProviderClient.from_settings(p, settings.gateway.transport)
                     for p in settings.providers}
        catalog = Catalog(settings, store, providers)
        try:
            await store.ping()
            await store.set_sequence_floors(settings.gateway.order_id_start,
                                            settings.gateway.refill_id_start)
            wait = max((p.timeout_s for p in settings.providers), default=1.0)
            await catalog.start(wait_s=wait)
            directory = Directory(store.redis)
            await directory.import_config(settings.clients)
            app.state.directory = directory
            app.state.limiter = RateLimiter(store.redis)
            breakers = Breakers(store.redis, settings.gateway)
            balances = Balances(store, providers, settings.gateway)
            await balances.start()
            app.state.gateway = Gateway(settings, store, catalog, providers, breakers, balances)
            yield
        finally:
            if hasattr(app.state, "gateway"):
                await app.state.gateway.balances.stop()
            await catalog.stop()
            for client in providers.values():
                await client.aclose()
            await store.aclose()

    app = Litestar(
        route_handlers=[api_v2, api_v2_get, healthz],
        lifespan=[lifespan],
        exception_handlers={
            ClientError: _on_client_error,
            HTTPException: _on_http_error,
            Exception: _on_crash,
        },
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.always_200 = settings.gateway.error_status == "always-200"
    return app
