"""Fixtures of the unit tier: the gateway in-process, over real Redis and fake providers.

- Redis is real (`fresh_redis` from tests/conftest.py, flushed here per test).
- Providers are `upstream.FakeProvider`s behind the transport seam.
- Time is a `ManualClock`: tests move it, nothing sleeps for time to pass.

Two ways in, both reading gateway settings from `@pytest.mark.gateway(**overrides)`:

- `app`: `create_app(...)` under litestar's `AsyncTestClient` (its lifespan runs),
  so tests POST form bodies to `/api/v2`. The app runs on the test client's
  portal thread: reach its state with `app.in_app(coroutine_function, *args)`.
- `state`: `open_resources(...)` and `Actions` in the test's own event loop, for
  tests that drive actions concurrently or look at routing decisions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from restartable import Server

from gateway.actions import Actions
from gateway.clock import ManualClock
from gateway.state.clients import Directory
from gateway.state.connect import connect
from gateway.wiring import open_resources
from inprocess import App, State, flushed, make_providers, make_settings, serve
from upstream import FakeProvider, transport_for


def _overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("gateway")
    return dict(marker.kwargs) if marker else {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gateway(**settings): gateway settings for this test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def providers() -> dict[str, FakeProvider]:
    return make_providers()


@pytest.fixture
def redis_url(fresh_redis: str) -> str:
    return flushed(fresh_redis)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def app(anyio_backend: str, request: pytest.FixtureRequest, redis_url: str,
              providers: dict[str, FakeProvider], clock: ManualClock) -> AsyncIterator[App]:
    async with serve(make_settings(**_overrides(request)), redis_url, providers, clock) as a:
        yield a


@pytest.fixture
async def state(anyio_backend: str, request: pytest.FixtureRequest, redis_url: str,
                providers: dict[str, FakeProvider], clock: ManualClock, tmp_path: Path,
                ) -> AsyncIterator[State]:
    settings = make_settings(**_overrides(request))
    async with open_resources(settings, redis_url, transport=transport_for(providers),
                              clock=clock, journal_dir=tmp_path / "journal") as r:
        actions = Actions(r)
        try:
            yield State(r, actions, clock, providers)
        finally:
            await actions.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """An embedded redis-server of this test's own, to stop and restart."""
    s = Server(tmp_path / "redis")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def directory(anyio_backend: str, redis_url: str) -> AsyncIterator[Directory]:
    """The client directory on a Redis database of its own."""
    redis = connect(redis_url)
    try:
        yield Directory(redis)
    finally:
        await redis.aclose()
