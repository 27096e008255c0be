"""The gateway in-process for the unit tier: its config, and handles on the app
(over HTTP) and on its resources and actions (in the test's loop).

The fixtures that build these are in conftest.py; tests import the types and
helpers from here.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
import yaml
from litestar.testing import AsyncTestClient

from gateway.actions import Actions
from gateway.clock import ManualClock
from gateway.config import Settings, parse_settings
from gateway.edge.app import create_app
from gateway.models import OrderRecord
from gateway.state.clients import ClientRecord
from gateway.wire import Answer, OrderAnswer
from gateway.wiring import Resources
from upstream import FakeProvider, transport_for

T = TypeVar("T")

ALICE = "alice-key"  # operator: her `balance` is the upstreams' sum
BOB = "bob-key"  # ledger: a prepaid reseller

CATALOG_A: list[dict[str, Any]] = [
    {"service": 1, "name": "Followers", "type": "Default", "category": "TikTok",
     "rate": "0.50", "min": 10, "max": 1000, "refill": 1, "cancel": 1, "dripfeed": 0},
    {"service": 2, "name": "Likes", "type": "Default", "category": "TikTok",
     "rate": "0.20", "min": 10, "max": 100000, "refill": 0, "cancel": 1},
    {"service": 3, "name": "Views", "type": "Default", "category": "TikTok",
     "rate": "0.04", "min": 100, "max": 1000000, "refill": 0, "cancel": 0},
]
CATALOG_B: list[dict[str, Any]] = [
    {"service": 11, "name": "Followers", "type": "Default", "category": "TikTok",
     "rate": "0.80", "min": 10, "max": 5000, "refill": 1, "cancel": 1, "dripfeed": 1},
    {"service": 12, "name": "Likes", "type": "Default", "category": "TikTok",
     "rate": "0.30", "min": 10, "max": 100000, "refill": 0, "cancel": 1},
    {"service": 13, "name": "Views", "type": "Default", "category": "TikTok",
     "rate": "0.06", "min": 100, "max": 1000000, "refill": 0, "cancel": 0},
]

# what a test may rely on unless it says otherwise with @pytest.mark.gateway(...)
GATEWAY_DEFAULTS: dict[str, Any] = {
    "currency": "USD", "markup": "1.5", "order_id_start": 1000, "refill_id_start": 500,
    "status_cache_s": 0, "balance_cache_s": 0,
    "balance_refresh_s": 0,  # no background balance refresh: upstream calls are the test's
    "catalog_ttl_s": 86400,  # no catalog refresh while the clock moves
    "breaker_window_s": 60, "breaker_min_requests": 3, "breaker_threshold": 0.5,
    "breaker_cooldown_s": 30,
}


def upstream_key(name: str) -> str:
    return "upstream-secret-" + name


def config_text(**gateway: Any) -> str:
    """The YAML of a two-provider gateway: prov-a is cheaper, prov-b has more."""
    def provider(name: str) -> dict[str, Any]:
        return {"name": name, "url": f"https://{name}.example/api/v2",
                "key": upstream_key(name), "timeout_s": 3}

    config = {
        "gateway": {**GATEWAY_DEFAULTS, **gateway},
        "clients": [{"name": "alice", "key": ALICE},
                    {"name": "bob", "key": BOB, "mode": "ledger"}],
        "providers": [provider("prov-a"), provider("prov-b")],
        "services": [
            {"id": 1, "name": "Followers", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 1},
                           {"provider": "prov-b", "service": 11}]},
            {"id": 2, "name": "Likes", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 2},
                           {"provider": "prov-b", "service": 12}]},
            {"id": 3, "name": "Views", "category": "TikTok", "price": "0.05",
             "upstreams": [{"provider": "prov-a", "service": 3},
                           {"provider": "prov-b", "service": 13}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def make_settings(**gateway: Any) -> Settings:
    return parse_settings(config_text(**gateway), env={})


def make_providers() -> dict[str, FakeProvider]:
    return {
        "prov-a": FakeProvider("prov-a", CATALOG_A, key=upstream_key("prov-a"),
                               balance="100.50", first_order=9001),
        "prov-b": FakeProvider("prov-b", CATALOG_B, key=upstream_key("prov-b"),
                               balance="20", first_order=7001),
    }


def flushed(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


# --- the app, over HTTP ------------------------------------------------------


@dataclass
class App:
    http: AsyncTestClient[Any]
    settings: Settings
    clock: ManualClock
    providers: dict[str, FakeProvider]

    async def post(self, key: str | None = ALICE, **fields: Any) -> httpx.Response:
        data = {k: str(v) for k, v in fields.items()}
        if key is not None:
            data["key"] = key
        return await self.http.post("/api/v2", data=data)

    async def call(self, key: str | None = ALICE, **fields: Any) -> Any:
        response = await self.post(key, **fields)
        return response.json()

    @property
    def resources(self) -> Resources:
        resources: Resources = self.http.app.state.resources
        return resources

    def in_app(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` in the app's event loop (its Redis clients live there)."""
        return self.http.blocking_portal.call(fn, *args)


@asynccontextmanager
async def serve(settings: Settings, redis_url: str, providers: dict[str, FakeProvider],
                clock: ManualClock, data_dir: Path | None = None) -> AsyncIterator[App]:
    """The app under a test client; its data dir (the journal) is `data_dir`, else a
    temporary one."""
    with tempfile.TemporaryDirectory(prefix="gw-data-") as tmp:
        app = create_app(settings, redis_url, data_dir=data_dir or Path(tmp),
                         transport=transport_for(providers), clock=clock)
        async with AsyncTestClient(app) as http:
            yield App(http, settings, clock, providers)


# --- resources and actions, in the test's loop --------------------------------


@dataclass
class State:
    r: Resources
    actions: Actions
    clock: ManualClock
    providers: dict[str, FakeProvider]

    async def client(self, key: str = ALICE) -> ClientRecord:
        record = await self.r.directory.identify(key)
        assert record is not None
        return record

    async def act(self, action: str, key: str = ALICE, **fields: Any) -> Answer:
        handler = self.actions.table[action]
        return await handler(await self.client(key),
                             {"action": action, **{k: str(v) for k, v in fields.items()}})

    async def add(self, key: str = ALICE, **fields: Any) -> tuple[int, OrderRecord]:
        """Place an order through the `add` action: its id and stored record."""
        answer = await self.act("add", key, **fields)
        assert isinstance(answer, OrderAnswer)
        records = await self.r.orders.get_orders([answer.order])
        return answer.order, records[answer.order]
