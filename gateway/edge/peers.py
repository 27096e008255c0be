"""Who is calling: the address a request comes from."""

from __future__ import annotations

from typing import Any

from litestar import Request


def client_address(request: Request[Any, Any, Any]) -> str:
    """The peer's address."""
    return request.client.host if request.client else "-"
