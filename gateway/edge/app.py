"""The ASGI app: its routes, its exception table and its lifespan.

The lifespan opens what lasts for the process (`gateway.wiring.open_lasting`) and
the config's resources and actions through a `gateway.edge.reload.Reloader`, which
swaps in a new config on SIGHUP or from the dashboard; all is closed in reverse
order. The HTTP edge knows HTTP; nothing after it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from litestar import Litestar

from gateway.admin.mount import mount
from gateway.clock import SYSTEM, Clock
from gateway.config import Settings
from gateway.edge.answers import HANDLERS, Outage
from gateway.edge.api import api_v2
from gateway.edge.fields import MAX_BODY
from gateway.edge.memory import Reclaimer, settle_heap
from gateway.edge.peers import client_address
from gateway.edge.probes import healthz, lifecycle, livez, readyz, scrape
from gateway.edge.reload import Reloader, apply_settings
from gateway.wiring import TransportFactory, WebhookTransport, open_lasting, release_idle


def create_app(settings: Settings, redis_url: str, *, data_dir: Path | None = None,
               transport: TransportFactory | None = None, clock: Clock = SYSTEM,
               config_path: Path | None = None,
               webhook_transport: WebhookTransport | None = None,
               serving: bool = False) -> Litestar:
    """The ASGI app. Its lifespan opens every resource (`gateway.wiring`) and closes it.
    `data_dir`: the gateway's data directory (its `journal/` is kept there).
    `config_path`: the file `settings` came from; with it the config can be reloaded
    (SIGHUP, the dashboard, `POST /admin/api/reload`). `serving`: the app is the
    process's one (`serve`): once it is up, its heap is settled for the collector
    (`gateway.edge.memory.settle_heap`)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            lasting = await stack.enter_async_context(open_lasting(
                redis_url, clock=clock, journal_dir=data_dir / "journal" if data_dir else None))
            reloader = Reloader(app.state, lasting, config_path, transport=transport,
                                webhook_transport=webhook_transport)
            stack.push_async_callback(reloader.aclose)
            await reloader.start(settings)
            app.state.reloader = reloader
            reloader.listen()
            reclaimer: Reclaimer = app.state.reclaimer
            reclaimer.hooks.append(lambda: release_idle(app.state.resources))
            reclaiming = asyncio.create_task(reclaimer.run())
            stack.callback(reclaiming.cancel)
            if serving:
                settle_heap()
            yield

    admin = mount(settings.gateway.admin_key, client_address) if settings.gateway.admin_key \
        else None  # /admin/ is served only with an admin key: otherwise 404 like any path
    app = Litestar(
        route_handlers=[api_v2, livez, healthz, readyz, scrape,
                        *([admin.router] if admin else [])],
        template_config=admin.templates if admin else None,
        lifespan=[lifespan, lifecycle],  # lifecycle is left first: readyz says 503 at once
        exception_handlers=HANDLERS,
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
    app.state.outage = Outage()
    app.state.reclaimer = Reclaimer()  # memory back after a burst (gateway.edge.memory)
    apply_settings(app.state, settings)
    return app
