"""Probes for process managers and load balancers, and the Prometheus scrape.

- `/livez`: the process answers (`{"live":true}`); nothing else is asked.
- `/healthz`: the process answers and Redis answers a PING (kept as it was).
- `/readyz`: Redis answers, every provider's service list is in (a replica that
  would answer `services` with an error is not ready), a serving slot is free
  (`gateway.max_in_flight`: a saturated replica says so, and a balancer sends the
  next requests elsewhere), and the app is not shutting down (503 from the moment
  the lifespan shutdown begins, while the dispatches in flight finish). It names no
  provider: the log does.
- `/metrics`: Prometheus text (`gateway.metrics`); the gauges are set here, at
  scrape time, from what this process holds in memory (balances, catalog ages)
  and from Redis at most once per SLOW_READ_S (breaker states, unknown orders).

Only `/api/v2` is proxied by `deploy/nginx.conf`'s public server (and the two
probes); `/livez` is for whoever reaches the gateway's own port. `/metrics` names
providers and money, so it answers only a client on loopback or one of
`gateway.trusted_proxies` (the real client: a request such a proxy forwards for
someone else is that someone's), or any client with `Authorization: Bearer
<gateway.metrics_key>`; others get 401 (no or a wrong key, when one is set) or 403.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from litestar import Litestar, Request, Response, get

from gateway import metrics
from gateway.edge.answers import JSON
from gateway.edge.peers import client_address, is_trusted, parse_address
from gateway.errors import StoreUnavailable
from gateway.state.connect import ping
from gateway.wire import ENCODER, ErrorAnswer
from gateway.wiring import Resources

SLOW_READ_S = 5.0  # breaker states and the unknown-order count: read from Redis at most this often


@asynccontextmanager
async def lifecycle(app: Litestar) -> AsyncIterator[None]:
    """Registered after the app's own lifespan, so it is left first: `/readyz` answers
    503 from the start of the shutdown, and this worker's live gauges leave the
    merged metrics."""
    app.state.shutting_down = False
    try:
        yield
    finally:
        app.state.shutting_down = True
        metrics.process_exit()


@get("/livez", include_in_schema=False)
async def livez() -> Response[bytes]:
    return Response(b'{"live":true}', media_type=JSON)


@get("/healthz", include_in_schema=False)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    await ping(request.app.state.resources.redis)
    await request.app.state.outage.succeeded(request.app.state.resources.redis)
    return Response(b'{"ok":true}', media_type=JSON)


def _not_ready(**why: Any) -> Response[bytes]:
    return Response(ENCODER.encode({"ready": False, **why}), status_code=503, media_type=JSON)


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    if getattr(state, "shutting_down", True):
        return _not_ready(shutting_down=True)
    resources = state.resources
    try:
        await ping(resources.redis)
    except StoreUnavailable:
        return _not_ready(redis=False)
    await state.outage.succeeded(resources.redis)
    waiting = len(resources.catalog.never_fetched())
    if waiting:
        return _not_ready(lists_missing=waiting)
    if state.admission.locked():  # every serving slot is taken, or requests wait for one
        return _not_ready(saturated=True, max_in_flight=state.max_in_flight)
    return Response(b'{"ready":true}', media_type=JSON)


class SlowReads:
    """What the scrape reads from Redis, kept SLOW_READ_S; the last values stay when
    Redis does not answer (a scrape must work during an outage)."""

    def __init__(self) -> None:
        self.at = -math.inf
        self.breakers: dict[str, bool] = {}
        self.unknown: int | None = None

    async def refresh(self, r: Resources) -> None:
        now = r.clock.monotonic()
        if now - self.at < SLOW_READ_S:
            return
        self.at = now
        try:
            self.breakers = {name: await r.breakers.state(name) != "closed"
                             for name in r.providers}
            self.unknown = await r.orders.count_unknown()
        except StoreUnavailable:
            pass


def _scraper_refused(request: Request[Any, Any, Any], r: Resources) -> Response[bytes] | None:
    """None when this client may read the metrics, else the answer it gets."""
    auth = request.headers.get("authorization", "")
    key = r.settings.gateway.metrics_key
    if auth[:7].lower() == "bearer ":
        if key and hmac.compare_digest(auth[7:].strip().encode(), key.encode()):
            return None
        return _refused(401, "Invalid metrics key")
    address = parse_address(client_address(request))
    if address is not None and (address.is_loopback or
                                is_trusted(address, request.app.state.trusted_networks)):
        return None
    if key:
        return _refused(401, "Authorization: Bearer <gateway.metrics_key> is required")
    return _refused(403, "/metrics answers loopback and gateway.trusted_proxies only "
                         "(or set gateway.metrics_key)")


def _refused(status: int, message: str) -> Response[bytes]:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return Response(ENCODER.encode(ErrorAnswer(message)), status_code=status,
                    media_type=JSON, headers=headers)


@get("/metrics", include_in_schema=False)
async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = request.app.state
    r: Resources = state.resources
    refused = _scraper_refused(request, r)
    if refused is not None:
        return refused
    slow: SlowReads | None = getattr(state, "slow_reads", None)
    if slow is None:
        slow = state.slow_reads = SlowReads()
    await slow.refresh(r)
    now = r.clock.time()
    balances: dict[str, Decimal] = {}
    ages: dict[str, float] = {}
    for name in r.providers:
        amount = r.balances.in_gateway_currency(name)
        if amount is not None:
            balances[name] = amount
        fetched = r.catalog.fetched_at(name)
        ages[name] = math.inf if fetched is None else max(0.0, now - fetched)
    metrics.set_gauges(breakers_open=slow.breakers, balances=balances, catalog_ages=ages,
                       unknown_orders=slow.unknown)
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
