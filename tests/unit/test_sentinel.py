"""Redis Sentinel (`redis+sentinel://`): the gateway's client follows the master the
sentinels name, through a real failover (master killed, replica promoted)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError
from replicated import ReplicatedRedis

from gateway.errors import ConfigError
from gateway.state import keys
from gateway.state.connect import connect
from gateway.state.orders import Orders

pytestmark = pytest.mark.anyio


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    r = ReplicatedRedis(tmp_path)
    try:
        yield r
    finally:
        r.stop()


async def test_the_client_follows_a_sentinel_failover(replicated: ReplicatedRedis) -> None:
    orders = Orders(connect(replicated.sentinel_url))
    try:
        first = await orders.next_order_id()
        await orders.redis.set("before", "1")
        assert await orders.redis.wait(1, 5000) == 1  # the replica has it
        replicated.kill_master()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # the sentinel promotes the replica within a few seconds
            try:
                await orders.redis.set("after", "1")
                break
            except RedisError:  # (the raw client: redis-py's errors, not the store's)
                pass
            assert loop.time() < deadline, "no master after the failover"
            await asyncio.sleep(0.1)
        assert await orders.redis.get("before") == b"1"
        info = await orders.redis.info("server")
        assert int(info["tcp_port"]) == replicated.replica.port  # the promoted replica
        assert await orders.next_order_id() > first
        assert await orders.redis.get(keys.ORDER_SEQ) is not None
    finally:
        await orders.redis.aclose()


@pytest.mark.parametrize("url", [
    "redis+sentinel://", "redis+sentinel://127.0.0.1:26379", "redis+sentinel://host/gw",
])
def test_a_sentinel_url_without_its_parts_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        connect(url)
