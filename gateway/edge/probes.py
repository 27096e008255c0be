"""Probes for process managers and load balancers."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.edge.answers import JSON
from gateway.state.connect import ping


@get("/healthz", include_in_schema=False)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    await ping(request.app.state.resources.redis)
    await request.app.state.outage.succeeded(request.app.state.resources.redis)
    return Response(b'{"ok":true}', media_type=JSON)
