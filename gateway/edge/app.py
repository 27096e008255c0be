"""The HTTP edge: one SMM API v2 endpoint, auth, and the app's lifespan.

Data path: edge (here) -> auth -> action (`gateway.actions`) -> router
(`gateway.routing`) -> provider client (`gateway.upstream`) -> state
(`gateway.state`). This package knows HTTP; nothing after it does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get, post

from gateway.actions import Actions
from gateway.clock import SYSTEM, Clock
from gateway.config import Settings
from gateway.edge.answers import HANDLERS, JSON, Outage
from gateway.edge.auth import fingerprint, presented_key
from gateway.edge.fields import MAX_BODY, read_fields
from gateway.errors import AuthError, ClientError, NotFound
from gateway.state.connect import ping
from gateway.wire import ENCODER, Encoded
from gateway.wiring import Resources, TransportFactory, open_resources

log = logging.getLogger("gateway.edge")


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False)
async def api_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    r: Resources = state.resources
    address = request.client.host if request.client else "-"
    r.limiter.refuse_blocked(address)
    fields = await read_fields(request)
    key = presented_key(fields, request.headers)
    client = await r.directory.identify(key)
    if client is None:
        log.info("authentication failed", extra={
            "address": address, "key": fingerprint(key) if key else None})
        await r.limiter.failed_auth(address)
        raise AuthError()
    if client.rate_limit:
        await r.limiter.check(client.name, client.rate_limit, client.burst)
    idem = request.headers.get("idempotency-key")
    if idem:
        fields["idempotency_key"] = idem
    action = fields.get("action", "").strip()
    if not action:
        raise ClientError("Missing action")
    handler = state.actions.table.get(action)
    if handler is None:
        raise ClientError("Incorrect request: unknown action")
    result = await handler(client, fields)
    await state.outage.succeeded(r.redis)
    if isinstance(result, Encoded):  # `services`: pre-encoded, with its ETag
        if request.headers.get("if-none-match") == result.etag:
            return Response(b"", status_code=304, headers={"ETag": result.etag})
        return Response(result.body, media_type=JSON, headers={"ETag": result.etag})
    return Response(ENCODER.encode(result), media_type=JSON)


@get(["/api/v2", "/api/v2/"], include_in_schema=False)
async def api_v2_get() -> None:
    raise NotFound()


@get("/healthz", include_in_schema=False)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    await ping(request.app.state.resources.redis)
    await request.app.state.outage.succeeded(request.app.state.resources.redis)
    return Response(b'{"ok":true}', media_type=JSON)


def create_app(settings: Settings, redis_url: str, *, transport: TransportFactory | None = None,
               clock: Clock = SYSTEM) -> Litestar:
    """The ASGI app. Its lifespan opens every resource (`gateway.wiring`) and closes it."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            resources = await stack.enter_async_context(
                open_resources(settings, redis_url, transport=transport, clock=clock))
            actions = Actions(resources)
            stack.push_async_callback(actions.aclose)
            app.state.resources = resources
            app.state.actions = actions
            yield

    app = Litestar(
        route_handlers=[api_v2, api_v2_get, healthz],
        lifespan=[lifespan],
        exception_handlers=HANDLERS,
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.always_200 = settings.gateway.error_status == "always-200"
    app.state.outage = Outage()
    return app
