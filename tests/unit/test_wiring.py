"""`open_resources`: whatever it opens it closes, its Redis connections included."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from gateway.clock import ManualClock
from gateway.state.embedded import EmbeddedRedis
from gateway.wiring import open_resources
from inprocess import make_settings
from upstream import FakeProvider, transport_for

pytestmark = pytest.mark.anyio


def others(watcher: redis.Redis) -> int:
    """Connections to the server other than the watcher's own."""
    return sum(1 for c in watcher.client_list() if c.get("name") != "watcher")


def settled(watcher: redis.Redis, expected: int) -> int:
    """The connection count once the server has seen closes already sent (at most 1 s)."""
    deadline = time.monotonic() + 1.0
    while (count := others(watcher)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


async def test_open_resources_uses_redis_while_open(
        tmp_path: Path, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        watcher = redis.Redis.from_url(server.url, client_name="watcher")
        try:
            async with open_resources(make_settings(), server.url,
                                      transport=transport_for(providers), clock=clock,
                                      journal_dir=tmp_path / "journal") as r:
                assert await r.orders.next_order_id() == 1000
                assert others(watcher) >= 1
                assert sorted(r.catalog.views) == [1, 2, 3]
        finally:
            watcher.close()


async def test_open_resources_closes_its_redis_connections(
        tmp_path: Path, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        watcher = redis.Redis.from_url(server.url, client_name="watcher")
        try:
            async with open_resources(make_settings(), server.url,
                                      transport=transport_for(providers), clock=clock,
                                      journal_dir=tmp_path / "journal") as r:
                await r.orders.next_order_id()
                assert others(watcher) >= 1
            assert r is not None  # still referenced: closing is wiring's job, not the GC's
            assert settled(watcher, 0) == 0
        finally:
            watcher.close()
