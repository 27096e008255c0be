"""The ASGI app: its routes, its exception table and its lifespan.

The lifespan opens every resource (`gateway.wiring`) and the actions on one
AsyncExitStack and closes them in reverse order. The HTTP edge knows HTTP;
nothing after it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from litestar import Litestar

from gateway.actions import Actions
from gateway.admin.mount import mount
from gateway.clock import SYSTEM, Clock
from gateway.config import Settings
from gateway.edge.answers import HANDLERS, Outage
from gateway.edge.api import api_v2, api_v2_get
from gateway.edge.fields import MAX_BODY
from gateway.edge.memory import Reclaimer
from gateway.edge.peers import client_address, parse_networks
from gateway.edge.probes import healthz, lifecycle, livez, readyz, scrape
from gateway.edge.timeouts import ReadTimeouts
from gateway.wiring import TransportFactory, open_resources, release_idle


def create_app(settings: Settings, redis_url: str, *, data_dir: Path | None = None,
               transport: TransportFactory | None = None, clock: Clock = SYSTEM) -> Litestar:
    """The ASGI app. Its lifespan opens every resource (`gateway.wiring`) and closes it.
    `data_dir`: the gateway's data directory (its `journal/` is kept there)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            resources = await stack.enter_async_context(
                open_resources(settings, redis_url, transport=transport, clock=clock,
                               journal_dir=data_dir / "journal" if data_dir else None))
            actions = Actions(resources)
            stack.push_async_callback(actions.aclose)
            app.state.resources = resources
            app.state.actions = actions
            app.state.outage.events = resources.events  # Redis outages are alerts too
            reclaimer: Reclaimer = app.state.reclaimer
            reclaimer.hooks.append(lambda: release_idle(resources))
            reclaiming = asyncio.create_task(reclaimer.run())
            stack.callback(reclaiming.cancel)
            yield

    admin = mount(settings.gateway.admin_key, client_address) if settings.gateway.admin_key \
        else None  # /admin/ is served only with an admin key: otherwise 404 like any path
    app = Litestar(
        route_handlers=[api_v2, api_v2_get, livez, healthz, readyz, scrape,
                        *([admin.router] if admin else [])],
        template_config=admin.templates if admin else None,
        lifespan=[lifespan, lifecycle],  # lifecycle is left first: readyz says 503 at once
        exception_handlers=HANDLERS,
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.always_200 = settings.gateway.error_status == "always-200"
    app.state.outage = Outage()
    app.state.reclaimer = Reclaimer()  # memory back after a burst (gateway.edge.memory)
    app.state.admission = asyncio.Semaphore(settings.gateway.max_in_flight)
    app.state.trusted_networks = parse_networks(settings.gateway.trusted_proxies)
    app.state.read_timeouts = ReadTimeouts(settings.gateway.header_timeout_s,
                                           settings.gateway.body_timeout_s)
    return app
