"""The exception table: every error the gateway raises, answered as {"error": ...}.

One handler per branch of `gateway.errors`, registered once on the app; no
route catches anything itself. Every answer is JSON, never HTML, and with
`gateway.error_status: always-200` every error is sent with HTTP 200 (for
clients that raise on any other status).

A Redis outage (`StoreUnavailable`) is logged once when it starts and once when
the next request succeeds, not as a traceback per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from gateway.errors import ClientError, StoreUnavailable
from gateway.wire import ENCODER, ErrorAnswer

log = logging.getLogger("gateway.edge")

JSON = "application/json"
TEMPORARY = "Temporary error, try again later"
TOO_LARGE = "Request body too large (64 KiB at most)"


class Outage:
    """Whether Redis is known to be down, so an outage is logged once, not per request."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, exc: StoreUnavailable) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("redis unavailable: answering 503 until it is back",
                      extra={"error": str(exc)})

    def ok(self) -> None:
        if self.since is not None:
            log.warning("redis is back", extra={"outage_s": round(time.monotonic()
                                                                  - self.since, 3)})
            self.since = None


def error(request: Request[Any, Any, Any], message: str, status: int) -> Response[bytes]:
    if request.app.state.always_200:
        status = 200
    return Response(ENCODER.encode(ErrorAnswer(message)), status_code=status, media_type=JSON)


def _client_error(request: Request[Any, Any, Any], exc: ClientError) -> Response[bytes]:
    return error(request, exc.message, exc.status_code)


def _store_unavailable(request: Request[Any, Any, Any],
                       exc: StoreUnavailable) -> Response[bytes]:
    request.app.state.outage.failed(exc)
    return error(request, TEMPORARY, StoreUnavailable.status_code)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code in (404, 405):
        return error(request, "Not Found", 404)
    if exc.status_code == 413:
        return error(request, TOO_LARGE, 400)
    return error(request, "Incorrect request", 400)


def _crash(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error", exc_info=exc)
    return error(request, TEMPORARY, 503)


HANDLERS: ExceptionHandlersMap = {
    ClientError: _client_error,
    StoreUnavailable: _store_unavailable,
    HTTPException: _http_error,
    Exception: _crash,
}
