"""The exception table: every error the gateway raises, answered as {"error": ...}.

One answer per branch of `gateway.errors` (`reply`), registered once on the app
for its routes and used by the API endpoint itself (`gateway.edge.api`). Every
answer is JSON, never HTML, and with `always-200` every error is sent with HTTP
200 (for clients that raise on any other status): the client's own
`error_status` once its key is known, else `gateway.error_status`.

A Redis outage (`StoreUnavailable`) is logged once when it starts and once when
Redis answers again (with how long it lasted and how many requests it refused),
not as a traceback per request, and raises one `redis_down` alert and one
`redis_up` alert per outage, sent by this replica itself (`Alert.local`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway import metrics
from gateway.errors import ClientError, StoreUnavailable
from gateway.events import NOOP, Alert, Events
from gateway.state.connect import AnyRedis, ping
from gateway.wire import ENCODER, ErrorAnswer

log = logging.getLogger("gateway.edge")

JSON = "application/json"
TEMPORARY = "Temporary error, try again later"
TOO_LARGE = "Request body too large (64 KiB at most)"


class Outage:
    """Whether Redis is known to be down, so an outage is logged once, not per request.

    A request that succeeds during an outage may have been answered from memory (a
    cached key, `services`), so success alone does not end it: Redis must answer a
    PING, asked by the first success after a failure and otherwise at most once per
    CHECK_S while the outage lasts.
    """

    CHECK_S = 1.0

    def __init__(self, events: Events = NOOP) -> None:
        self.events = events  # the lifespan sets the replica's alert sink once it is open
        self.since: float | None = None
        self.refused = 0  # requests answered 503 during the current outage
        self._checked = 0.0

    def failed(self, exc: StoreUnavailable) -> None:
        self._checked = 0.0  # the next request that succeeds checks at once
        self.refused += 1
        if self.since is None:
            self.since = time.monotonic()
            log.error("redis unavailable: answering 503 until it is back",
                      extra={"error": str(exc)})
            self.events.emit(Alert(
                kind="redis_down", subject="redis", local=True,
                message="Redis is unreachable: requests that need it are answered 503 "
                        "until it is back", details={"error": str(exc)[:200]}))

    async def succeeded(self, redis: AnyRedis) -> None:
        """Called after a request succeeded; ends a known outage once Redis answers."""
        if self.since is None or time.monotonic() - self._checked < self.CHECK_S:
            return
        self._checked = time.monotonic()
        try:
            await ping(redis)
        except Exception:  # still away (or a client in trouble): never changes the answer
            return
        since = self.since
        if since is None:  # a request that asked at the same time ended it
            return
        outage_s = round(time.monotonic() - since, 3)
        log.warning("redis is back", extra={"outage_s": outage_s,
                                            "refused_requests": self.refused})
        self.events.emit(Alert(
            kind="redis_up", subject="redis", local=True,
            message=f"Redis is back after {outage_s:g} s ({self.refused} requests refused)",
            details={"outage_s": outage_s, "refused_requests": self.refused}))
        self.since, self.refused = None, 0


def reply(state: Any, exc: Exception) -> tuple[str, int]:
    """The message and HTTP status that answer `exc` (before `always-200`), with what
    the error does besides (an outage noted, a crash logged). `state`: the app's."""
    if isinstance(exc, ClientError):
        return exc.message, exc.status_code
    if isinstance(exc, StoreUnavailable):
        state.outage.failed(exc)
        metrics.redis_error()
        return TEMPORARY, StoreUnavailable.status_code
    if isinstance(exc, HTTPException):
        if exc.status_code in (404, 405):
            return "Not Found", 404
        if exc.status_code == 413:
            return TOO_LARGE, 400
        return "Incorrect request", 400
    log.exception("unhandled error", exc_info=exc)
    return TEMPORARY, 503


def _answer(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    message, status = reply(request.app.state, exc)
    if request.app.state.always_200:  # no client is known here: the gateway's setting
        status = 200
    return Response(ENCODER.encode(ErrorAnswer(message)), status_code=status, media_type=JSON)


HANDLERS: ExceptionHandlersMap = {Exception: _answer}
