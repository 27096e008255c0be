"""Every admin error as JSON `{"error": ...}` with its status: never an HTML error
page, never a 500 (a page asked for without a session: a redirect to the login
form). Registered on the admin router, so the API's 401 and 403 are not turned into
the SMM API's 400/404 by the app-wide table (`gateway.edge.answers`)."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap

from gateway.admin.operations import AdminError
from gateway.errors import StoreUnavailable
from gateway.wire import ENCODER, ErrorAnswer

log = logging.getLogger("gateway.admin")
JSON = "application/json"


class AdminHTTPError(Exception):
    """An admin request refused with `status` and a message that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """A page asked for without a live session: the way to the login form."""


def error(message: str, status: int) -> Response[bytes]:
    return Response(ENCODER.encode(ErrorAnswer(message)), status_code=status, media_type=JSON,
                    headers={"Cache-Control": "no-store"})


def _refused(request: Request[Any, Any, Any], exc: AdminHTTPError) -> Response[bytes]:
    return error(exc.message, exc.status)


def _login(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    return Redirect("/admin/login", status_code=303, headers={"Cache-Control": "no-store"})


def _admin_error(request: Request[Any, Any, Any], exc: AdminError) -> Response[bytes]:
    return error(str(exc), 400)


def _store(request: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[bytes]:
    log.warning("admin: redis unavailable", extra={"error": exc.message})
    return error("Redis is not answering; try again", 503)


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    return error(f"Incorrect request: {exc.detail}", 400)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code in (404, 405):
        return error("Not Found", exc.status_code)
    return error(exc.detail or "Incorrect request", exc.status_code)


def _crash(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("admin: unhandled error", exc_info=exc)
    return error("Temporary error, try again later", 503)


HANDLERS: ExceptionHandlersMap = {
    AdminHTTPError: _refused,
    LoginRequired: _login,
    AdminError: _admin_error,
    StoreUnavailable: _store,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _crash,
}
