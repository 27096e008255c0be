"""The dashboard as one litestar Router at /admin, and its template config: what
`gateway.edge.app.create_app` adds to the app when `gateway.admin_key` is set."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from gateway.admin import api, names, pages
from gateway.admin.answers import HANDLERS
from gateway.admin.guard import AddressOf, Console

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Mount:
    router: Router
    templates: TemplateConfig[JinjaTemplateEngine]


def mount(admin_key: str, address_of: AddressOf) -> Mount:
    """The router (pages and /admin/api/) and its templates. `address_of` names a
    request's client address (the edge's, which knows the trusted proxies)."""
    router = Router(path="/admin", route_handlers=[*api.HANDLERS, *pages.HANDLERS],
                    exception_handlers=HANDLERS,
                    opt={"admin": Console(admin_key.strip(), address_of)})
    return Mount(router, TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine,
                                        engine_callback=_filters))


def _filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["utc"] = _utc
    engine.engine.filters["in_path"] = names.in_path


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
