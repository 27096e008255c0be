"""The Redis connection (`gateway.state.connect`): redis-py's, sending each command
without a task of its own, and failing as redis-py does when the server is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from restartable import Server

from gateway.errors import StoreUnavailable
from gateway.state.connect import Connection, UnixConnection, connect, ping
from gateway.state.orders import Orders

pytestmark = pytest.mark.anyio


def counting_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    created = [0]

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                **kwargs: Any) -> asyncio.Task[Any]:
        created[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return created


async def test_a_command_is_sent_without_a_task(redis_url: str) -> None:
    """redis-py's own send bounds each write with `asyncio.wait_for`, a task per
    command in Python 3.11: 100 commands made 100 tasks."""
    redis = connect(redis_url)
    try:
        assert redis.connection_pool.connection_class in (Connection, UnixConnection)
        await ping(redis)  # the connection is open
        loop = asyncio.get_running_loop()
        created = counting_tasks(loop)
        try:
            for n in range(100):
                await redis.set(f"t:{n}", n)
            assert [int(v) for v in await redis.mget([f"t:{n}" for n in range(100)])] == \
                list(range(100))
        finally:
            loop.set_task_factory(None)
        assert created[0] == 0
    finally:
        await redis.aclose()


async def test_tcp_urls_get_the_tcp_kind(redis_url: str) -> None:
    redis = connect("redis://127.0.0.1:1/0")
    try:
        assert redis.connection_pool.connection_class is Connection
    finally:
        await redis.aclose()


async def test_a_server_gone_is_store_unavailable_and_back_again(server: Server) -> None:
    orders = Orders(connect(server.url))
    try:
        assert await orders.get_orders([1000]) == {}
        server.stop()
        with pytest.raises(StoreUnavailable):
            await orders.get_orders([1000])
        server.restart()
        assert await orders.get_orders([1000]) == {}
    finally:
        await orders.redis.aclose()


async def test_an_idle_connection_with_unread_data_is_never_handed_out(redis_url: str) -> None:
    """The pool's short way still refuses a connection with a reply nobody read (a
    command cut off mid-way): the next command must never read someone else's."""
    redis = connect(redis_url, pool_size=1)
    try:
        await redis.set("mine", "right")
        pool = redis.connection_pool
        dirty = await pool.get_connection()
        await dirty.send_command("ECHO", "someone else's reply")  # sent, never read
        await asyncio.sleep(0.05)  # the reply is in
        await pool.release(dirty)
        assert await redis.get("mine") == b"right"
    finally:
        await redis.aclose()
