"""The SMM API v2 endpoint: read the fields, authenticate, run the action, answer.

`POST /api/v2` (and `/api/v2/`) is the standard; `GET` with the fields in the query
string is served the same way (PHP panels read `$_REQUEST`, and clients in the wild
send `services`, or everything, as GETs). A GET without an `action` (a browser
opening the URL) is 404. Once the key names a client, its `error_status` decides
how every error of the request is answered (`gateway.edge.answers.error`).

Data path: edge (here) -> auth -> action (`gateway.actions`) -> router
(`gateway.routing`) -> provider client (`gateway.upstream`) -> state
(`gateway.state`).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, get, post

from gateway.edge.answers import ERROR_STATUS, JSON
from gateway.edge.auth import fingerprint, presented_key
from gateway.edge.fields import query_fields, read_fields
from gateway.edge.peers import client_address
from gateway.errors import AuthError, ClientError, NotFound
from gateway.wire import ENCODER, Encoded
from gateway.wiring import Resources

log = logging.getLogger("gateway.edge")


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False)
async def api_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    address = client_address(request)
    await request.app.state.resources.limiter.refuse_blocked(address)
    return await _serve(request, address, await read_fields(request), {})


@get(["/api/v2", "/api/v2/"], include_in_schema=False)
async def api_v2_get(request: Request[Any, Any, Any]) -> Response[bytes]:
    fields = query_fields(request)
    if not fields.get("action", "").strip():
        raise NotFound()  # a browser opening the URL
    address = client_address(request)
    await request.app.state.resources.limiter.refuse_blocked(address)
    # the URL holds the key: no shared cache may keep the answer
    return await _serve(request, address, fields, {"Cache-Control": "private, no-cache"})


async def _serve(request: Request[Any, Any, Any], address: str, fields: dict[str, str],
                 headers: dict[str, str]) -> Response[bytes]:
    state = request.app.state
    r: Resources = state.resources
    key = presented_key(fields, request.headers)
    client = await r.directory.identify(key)
    if client is None:
        log.info("authentication failed", extra={
            "address": address, "key": fingerprint(key) if key else None})
        await r.limiter.failed_auth(address)
        raise AuthError()
    request.state[ERROR_STATUS] = client.error_status  # its errors, its way from here on
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
        headers["ETag"] = result.etag
        if request.headers.get("if-none-match") == result.etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(result.body, media_type=JSON, headers=headers)
    return Response(ENCODER.encode(result), media_type=JSON, headers=headers)
