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

import asyncio
import logging
import os
import socket
import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.actions.common import NOT_CONFIRMED, UNAVAILABLE
from gateway.edge.answers import ERROR_STATUS, JSON
from gateway.edge.auth import fingerprint, presented_key
from gateway.edge.fields import query_fields, read_fields
from gateway.edge.peers import client_address
from gateway.edge.reload import Generation
from gateway.errors import AuthError, ClientError, NotFound, NotReady, StoreUnavailable
from gateway.wire import ENCODER, Encoded
from gateway.wiring import Resources

log = logging.getLogger("gateway.edge")
access = logging.getLogger("gateway.access")

# request.state: what the access log and the metrics say about a request
ACTION, CLIENT, IDS, OUTCOME = "m_action", "m_client", "m_ids", "m_outcome"
GENERATION = "generation"  # the config a request runs on, start to end (gateway.edge.reload)


def measured(app: ASGIApp) -> ASGIApp:
    """Middleware of the API routes: as a request's answer goes out, its metrics and its
    access-log line, with the status actually sent (errors are answered by the
    exception table, inside this). The request keeps the config it started with, and
    that config stays open until it is done (a reload swaps in another meanwhile)."""

    async def measure(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status, done = 0, False
        app_state = scope["app"].state
        reclaimer = app_state.reclaimer
        reclaimer.enter()
        generation: Generation = app_state.generation.enter()
        scope.setdefault("state", {})[GENERATION] = generation

        async def sending(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):  # counted before the client has it
                done = True
                _answered(scope, status, time.perf_counter() - started)
            await send(message)

        try:
            async with app_state.admission:  # gateway.max_in_flight
                await app(scope, receive, sending)
        finally:
            reclaimer.leave()
            generation.leave()
            if not done:  # no answer sent (the client went away)
                _answered(scope, status, time.perf_counter() - started)

    return measure


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False,
      middleware=[measured])
async def api_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        address = client_address(request)
        await request.state[GENERATION].resources.limiter.refuse_blocked(address)
        return await _serve(request, address, await read_fields(request), {})
    except BaseException as exc:
        request.state[OUTCOME] = outcome(exc)
        raise


@get(["/api/v2", "/api/v2/"], include_in_schema=False, middleware=[measured])
async def api_v2_get(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        fields = query_fields(request)
        if not fields.get("action", "").strip():
            raise NotFound()  # a browser opening the URL
        address = client_address(request)
        await request.state[GENERATION].resources.limiter.refuse_blocked(address)
        # the URL holds the key: no shared cache may keep the answer
        return await _serve(request, address, fields, {"Cache-Control": "private, no-cache"})
    except BaseException as exc:
        request.state[OUTCOME] = outcome(exc)
        raise


async def _serve(request: Request[Any, Any, Any], address: str, fields: dict[str, str],
                 headers: dict[str, str]) -> Response[bytes]:
    state = request.app.state
    generation: Generation = request.state[GENERATION]
    r: Resources = generation.resources
    table = generation.actions.table
    request.state[ACTION] = _action_label(fields.get("action", "").strip(), table)
    request.state[IDS] = _ids_count(fields)
    key = presented_key(fields, request.headers)
    client = await r.directory.identify(key)
    if client is None:
        log.info("authentication failed", extra={
            "address": address, "key": fingerprint(key) if key else None})
        await r.limiter.failed_auth(address)
        raise AuthError()
    request.state[ERROR_STATUS] = client.error_status  # its errors, its way from here on
    request.state[CLIENT] = client.name
    if client.rate_limit:
        await r.limiter.check(client.name, client.rate_limit, client.burst)
    idem = request.headers.get("idempotency-key")
    if idem:
        fields["idempotency_key"] = idem
    action = fields.get("action", "").strip()
    if not action:
        raise ClientError("Missing action")
    handler = table.get(action)
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


def outcome(exc: BaseException) -> str:
    """The `outcome` label of a request that ended in `exc`."""
    if isinstance(exc, ClientError):
        if exc.message == UNAVAILABLE or isinstance(exc, NotReady):
            return "unavailable"  # no provider could take it now, or not ready yet
        if exc.message == NOT_CONFIRMED:
            return "not_confirmed"  # money at risk: an order in the unknown state
        return _BY_STATUS.get(exc.status_code, "client_error")
    if isinstance(exc, StoreUnavailable):
        return "redis_error"
    if isinstance(exc, HTTPException):
        return "client_error"  # a body too large, a malformed request
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"  # the client went away
    return "error"


_BY_STATUS = {401: "auth_error", 429: "rate_limited"}


def _action_label(action: str, table: dict[str, Any]) -> str:
    """A bounded label: a known action, "other" or "none" (never what a client typed)."""
    if action in table:
        return action
    return "other" if action else "none"


def _ids_count(fields: dict[str, str]) -> int:
    many = fields.get("orders") or fields.get("refills")
    if many:
        return many.count(",") + 1
    return 1 if fields.get("order") or fields.get("refill") else 0


_replica: tuple[int, str] = (0, "")


def replica() -> str:
    """This process, as `hostname:pid` (the pid is read again after a fork)."""
    global _replica
    pid = os.getpid()
    if _replica[0] != pid:
        _replica = (pid, f"{socket.gethostname()}:{pid}")
    return _replica[1]


def _answered(scope: Scope, status: int, seconds: float) -> None:
    facts: dict[str, Any] = scope.get("state") or {}
    action = facts.get(ACTION, "none")
    result = facts.get(OUTCOME) or ("ok" if 0 < status < 400 else "error")
    metrics.request(action, result, seconds)
    generation: Generation = facts.get(GENERATION) or scope["app"].state.generation
    if generation.resources.settings.gateway.access_log and \
            access.isEnabledFor(logging.INFO):
        line = {"client": facts.get(CLIENT), "action": action, "ids": facts.get(IDS, 0),
                "status": status, "outcome": result, "ms": round(seconds * 1000, 3),
                "replica": replica()}
        # as `access.info("request", extra=line)`, without its search for the caller's frame
        access.handle(access.makeRecord(access.name, logging.INFO, __file__, 0, "request", (),
                                        None, extra=line))
