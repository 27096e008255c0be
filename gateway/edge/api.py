"""The SMM API v2 endpoint: read the fields, authenticate, run the action, answer.

`POST /api/v2` (and `/api/v2/`) is the standard; `GET` with the fields in the query
string is served the same way (PHP panels read `$_REQUEST`, and clients in the wild
send `services`, or everything, as GETs). A GET without an `action` (a browser
opening the URL), and any other method, is 404. Once the key names a client, its
`error_status` decides how every error of the request is answered (`always-200`).

The endpoint is litestar's, routed by litestar, but served as a plain ASGI handler
(`@asgi`): the body is read, the answer sent and every error answered here (with
`gateway.edge.answers.reply`, the app's exception table's own), with no request
object, signature model or response conversion per request: the hot path of every
panel call. Its metrics and access-log line go out as its answer does, with the
status actually sent; it keeps the config it started with (a reload swaps in
another meanwhile, `gateway.edge.reload`).

A serving slot (`gateway.max_in_flight`, `app.state.admission`) is taken only once
the whole request is read and its key names a client, and only for the action: a
client that stalls its body, or sends no valid key, holds a connection until the
read timeouts cut it off (`gateway.edge.timeouts`) or the failed-authentication
block refuses it, never a slot. `/readyz` says not ready while every slot is taken.

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

from litestar import asgi
from litestar.exceptions import HTTPException
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from gateway import metrics
from gateway.actions.common import NOT_CONFIRMED, UNAVAILABLE
from gateway.edge.answers import reply
from gateway.edge.auth import authenticate, presented_key
from gateway.edge.fields import body_pairs, collect, query_fields, read_body
from gateway.edge.peers import scope_address
from gateway.edge.reload import Generation
from gateway.errors import ClientError, NotFound, NotReady, StoreUnavailable
from gateway.wire import ENCODER, Encoded, ErrorAnswer

log = logging.getLogger("gateway.edge")
access = logging.getLogger("gateway.access")

Headers = list[tuple[bytes, bytes]]
_CONTENT_TYPE = (b"content-type", b"application/json")
_PRIVATE = (b"cache-control", b"private, no-cache")  # a GET's URL holds the key
_OPTIONS: Headers = [(b"allow", b"GET, OPTIONS, POST")]


class Call:
    """One API request as its metrics and its access-log line tell it."""

    __slots__ = ("action", "client", "error_status", "ids", "outcome")

    def __init__(self) -> None:
        self.action = "none"
        self.client: str | None = None
        self.error_status: str | None = None  # the identified client's
        self.ids = 0
        self.outcome: str | None = None


@asgi(["/api/v2", "/api/v2/"], copy_scope=False)
async def api_v2(scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    state = scope["app"].state
    call = Call()
    reclaimer = state.reclaimer
    reclaimer.enter()
    generation: Generation = state.generation.enter()
    status = 0
    try:
        try:
            status, body, headers = await _serve(scope, receive, generation, call)
        except Exception as exc:
            call.outcome = outcome(exc)
            message, status = reply(state, exc)
            chosen = call.error_status
            if state.always_200 if chosen is None else chosen == "always-200":
                status = 200
            body, headers = ENCODER.encode(ErrorAnswer(message)), []
        if status not in (204, 304):  # they have no body
            headers.append(_CONTENT_TYPE)
            headers.append((b"content-length", b"%d" % len(body)))
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status,
                                         "headers": headers}
        await send(start)
        # counted before the client has it
        _answered(generation, call, status, time.perf_counter() - started)
        status = -1  # the client has it
        if scope["method"] == "HEAD":  # type: ignore[typeddict-item]  # headers only
            body = b""
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                      "more_body": False}
        await send(end)
    except BaseException as exc:
        call.outcome = call.outcome or outcome(exc)
        raise
    finally:
        reclaimer.leave()
        generation.leave()
        if status >= 0:  # no answer sent (the client went away)
            _answered(generation, call, status, time.perf_counter() - started)


async def _serve(scope: Scope, receive: Receive, generation: Generation, call: Call,
                 ) -> tuple[int, bytes, Headers]:
    state = scope["app"].state
    r = generation.resources
    method = scope["method"]  # type: ignore[typeddict-item]  # an http scope
    headers = {name.decode("latin-1"): value.decode("latin-1")
               for name, value in scope["headers"]}
    answer_headers: Headers = []
    if method == "POST":
        address = scope_address(scope, state.trusted_networks)
        r.limiter.refuse_known(address)
        fields = query_fields(scope["query_string"])
        body = await read_body(receive, headers.get("content-length"))
        fields.update(collect(await body_pairs(headers.get("content-type", ""), body)))
    elif method == "GET":
        fields = query_fields(scope["query_string"])
        if not fields.get("action", "").strip():
            raise NotFound()  # a browser opening the URL
        address = scope_address(scope, state.trusted_networks)
        r.limiter.refuse_known(address)
        answer_headers.append(_PRIVATE)  # no shared cache may keep the answer
    elif method == "OPTIONS":
        return 204, b"", list(_OPTIONS)
    else:
        raise NotFound()
    table = generation.actions.table
    action = fields.get("action", "").strip()
    call.action = _action_label(action, table)
    call.ids = _ids_count(fields)
    client = await authenticate(r.limiter, r.directory, address, presented_key(fields, headers))
    call.error_status = client.error_status  # its errors, its way from here on
    call.client = client.name
    if client.rate_limit:
        await r.limiter.check(client.name, client.rate_limit, client.burst)
    idem = headers.get("idempotency-key")
    if idem:
        fields["idempotency_key"] = idem
    if not action:
        raise ClientError("Missing action")
    handler = table.get(action)
    if handler is None:
        raise ClientError("Incorrect request: unknown action")
    async with state.admission:  # gateway.max_in_flight: taken by identified clients only
        result = await handler(client, fields)
        await state.outage.succeeded(r.redis)
    if isinstance(result, Encoded):  # `services`: pre-encoded, with its ETag
        answer_headers.append((b"etag", result.etag.encode()))
        if headers.get("if-none-match") == result.etag:
            return 304, b"", answer_headers
        return 200, result.body, answer_headers
    return 200, ENCODER.encode(result), answer_headers


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


def _answered(generation: Generation, call: Call, status: int, seconds: float) -> None:
    result = call.outcome or ("ok" if 0 < status < 400 else "error")
    metrics.request(call.action, result, seconds)
    if generation.resources.settings.gateway.access_log and \
            access.isEnabledFor(logging.INFO):
        line = {"client": call.client, "action": call.action, "ids": call.ids,
                "status": status, "outcome": result, "ms": round(seconds * 1000, 3),
                "replica": replica()}
        # as `access.info("request", extra=line)`, without its search for the caller's frame
        access.handle(access.makeRecord(access.name, logging.INFO, __file__, 0, "request", (),
                                        None, extra=line))
