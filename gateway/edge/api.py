"""The SMM API v2 endpoint: read the fields, authenticate, run the action, answer.

Data path: edge (here) -> auth -> action (`gateway.actions`) -> router
(`gateway.routing`) -> provider client (`gateway.upstream`) -> state
(`gateway.state`).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, get, post

from gateway.edge.answers import JSON
from gateway.edge.auth import fingerprint, presented_key
from gateway.edge.fields import read_fields
from gateway.edge.peers import client_address
from gateway.errors import AuthError, ClientError, NotFound
from gateway.wire import ENCODER, Encoded
from gateway.wiring import Resources

log = logging.getLogger("gateway.edge")


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False)
async def api_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    r: Resources = state.resources
    address = client_address(request)
    await r.limiter.refuse_blocked(address)
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
