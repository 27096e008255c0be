"""The ceiling for a litestar handler on this machine: constant bytes, nothing else.

Served by uvicorn with the gateway's options (uvloop, httptools, no access log,
one worker), and by granian (ASGI on uvloop, HTTP/1, one worker) next to the
gateway on granian. The `services` target is ">= 10,000 req/s or >= 90% of this"
(under uvicorn, as the gateway), measured in the same run, so the figure says how
much of the cost is the gateway's own work rather than the framework and server
underneath it. The body is the gateway's own
`services` answer (file named by BENCH_BARE_BODY), so both send the same bytes.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from litestar import Litestar, Response, get, post


@cache
def body() -> bytes:
    """Read once, at the first request: the suite writes the file once the gateway is up,
    which may be after this app has started."""
    path = os.environ.get("BENCH_BARE_BODY")
    return Path(path).read_bytes() if path else b'{"ok":true}'


@post(["/api/v2", "/api/v2/"], status_code=200, include_in_schema=False)
async def constant() -> Response[bytes]:
    return Response(body(), media_type="application/json")


@get("/healthz", include_in_schema=False)
async def healthz() -> Response[bytes]:
    return Response(b'{"ok":true}', media_type="application/json")


app = Litestar(route_handlers=[constant, healthz], openapi_config=None, logging_config=None)
