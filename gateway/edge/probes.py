"""Probes for process managers and load balancers.

- `/healthz`: the process answers and Redis answers a PING (liveness).
- `/readyz`: and every provider's service list is in (a replica that would answer
  `services` with an error is not ready). It names no provider: the log does.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.edge.answers import JSON
from gateway.state.connect import ping
from gateway.wire import ENCODER


@get("/healthz", include_in_schema=False)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    await ping(request.app.state.resources.redis)
    await request.app.state.outage.succeeded(request.app.state.resources.redis)
    return Response(b'{"ok":true}', media_type=JSON)


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    resources = request.app.state.resources
    await ping(resources.redis)
    await request.app.state.outage.succeeded(resources.redis)
    waiting = len(resources.catalog.never_fetched())
    if waiting:
        return Response(ENCODER.encode({"ready": False, "lists_missing": waiting}),
                        status_code=503, media_type=JSON)
    return Response(b'{"ready":true}', media_type=JSON)
