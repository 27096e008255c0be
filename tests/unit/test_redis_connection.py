"""The Redis connection (`gateway.state.connect`): redis-py's, sending each command
without a task of its own, and failing as redis-py does when the server is gone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError, RedisError
from restartable import Server

from chaos.proxy import TcpProxy
from gateway.errors import StoreUnavailable
from gateway.state import keys, scripts
from gateway.state.connect import (
    POOL_SIZE,
    Connection,
    UnixConnection,
    connect,
    fill_pool,
    ping,
    repeatable,
)
from gateway.state.embedded import EmbeddedRedis, free_port
from gateway.state.ledger import Ledger
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


# --- the server goes away and comes back -------------------------------------------
# Held to the same tests as redis-py's own blocking pool ("redis-py"): whatever the
# short way to an idle connection skips, it must not skip a closed connection.

def _redis_py_client(url: str, pool_size: int = 64) -> Any:
    """redis-py's own client and blocking pool, with redis-py's defaults (it repeats
    a failed command up to ten times)."""
    return Redis(connection_pool=BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=10, retry=Redis().get_retry()))


CLIENTS = {"ours": connect, "redis-py": _redis_py_client}


@pytest.fixture(params=sorted(CLIENTS))
def make_client(request: pytest.FixtureRequest) -> Any:
    return CLIENTS[request.param]


@pytest.fixture
async def tcp_server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "tcp", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def proxy(tcp_server: EmbeddedRedis) -> AsyncIterator[TcpProxy]:
    p = TcpProxy(("127.0.0.1", int(tcp_server.port or 0)))
    await p.start()
    try:
        yield p
    finally:
        await p.aclose()


async def test_a_redis_restart_while_idle_is_over_at_the_first_request(
        server: Server, make_client: Any) -> None:
    """Every pooled connection was closed by the old server while the gateway was
    idle: the first request after the restart is served (main of dc7389a answered
    StoreUnavailable for ever: it handed the same closed connection out each time)."""
    orders = Orders(make_client(server.url))
    try:
        await fill_pool(orders.redis)
        await orders.redis.hset(keys.order_bucket(1000), "1000", b"kept")
        server.stop()
        await asyncio.sleep(0.1)  # idle: the loop sees every pooled connection closed
        server.restart()
        # the first request after it, an add: its id block is a command never sent
        # twice, so nothing but a fresh connection can serve it
        assert await orders.next_order_id() == 1
        assert await orders.redis.hget(keys.order_bucket(1000), "1000") == b"kept"
        # and every other pooled connection, each closed by the old server, too
        got = await asyncio.gather(*(orders.redis.incr("n") for _ in range(3 * POOL_SIZE)))
        assert sorted(got) == list(range(1, 3 * POOL_SIZE + 1))
    finally:
        await orders.redis.aclose()


class _RaisesWhenClosed(UnixConnection):
    """The project's connection over a unix socket, whose `can_read` raises when the
    server closed it (as redis-py's parsers before 8.0 did, and the issue's trace
    shows): the pool must drop such a connection, not hand it out again."""

    async def can_read(self) -> bool:
        reader = self._reader
        if reader is not None and reader.at_eof():
            raise ConnectionError("Connection closed by server.")
        return bool(await super().can_read())


async def test_a_connection_that_raises_when_closed_is_dropped_not_handed_out(
        server: Server) -> None:
    """Main of dc7389a released such a connection back to the pool and took the same
    one for the next command: every request answered 503 for as long as measured."""
    orders = Orders(connect(server.url, pool_size=4))
    try:
        orders.redis.connection_pool.connection_class = _RaisesWhenClosed
        await fill_pool(orders.redis)
        first = await orders.next_order_id()
        server.stop()
        await asyncio.sleep(0.1)  # idle: the loop sees every pooled connection closed
        server.restart()
        for _ in range(20):  # each an INCRBY: never sent twice, so never repeated
            orders.ids.moved()  # (a new block each time)
            assert await orders.next_order_id() > first
    finally:
        await orders.redis.aclose()


async def test_a_redis_restart_while_busy_is_over_once_it_answers(
        server: Server, make_client: Any) -> None:
    redis = make_client(server.url)
    failed = [0]
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            try:
                await redis.get("k")
            except RedisError:
                failed[0] += 1
                await asyncio.sleep(0)
    try:
        await redis.set("k", "v")
        pollers = [asyncio.create_task(poll()) for _ in range(32)]
        await asyncio.sleep(0.05)
        server.stop()  # commands in flight and waiting meet a closed server
        server.restart()
        stop.set()
        await asyncio.gather(*pollers)
        assert await redis.get("k") == b"v"  # the first request after it answers
        assert await asyncio.gather(*(redis.get("k") for _ in range(POOL_SIZE))) == \
            [b"v"] * POOL_SIZE
    finally:
        stop.set()
        await redis.aclose()


async def test_connections_cut_by_a_proxy_are_replaced_at_once(
        proxy: TcpProxy, make_client: Any) -> None:
    redis = make_client(proxy.url)
    try:
        await fill_pool(redis)
        await redis.set("k", "v")
        proxy.cut()
        await asyncio.sleep(0.05)  # the closes reach the client's sockets
        assert await asyncio.gather(*(redis.get("k") for _ in range(2 * POOL_SIZE))) == \
            [b"v"] * (2 * POOL_SIZE)
    finally:
        await redis.aclose()


async def replicated(replica: Redis, key: str, value: bytes, within_s: float = 30.0) -> None:
    """Wait until `replica` holds `key` = `value` (its first sync takes a moment)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while await replica.get(key) != value:
        assert asyncio.get_running_loop().time() < deadline, "the replica never caught up"
        await asyncio.sleep(0.02)


async def test_a_failover_behind_a_stable_address(tmp_path: Path, make_client: Any) -> None:
    """Master and replica behind one address (a proxy, as a cloud Redis or a load
    balancer gives): the replica is promoted, the address moves to it and the old
    connections are cut. The next command is served by the new master."""
    master = EmbeddedRedis(tmp_path / "master", port=free_port())
    replica = EmbeddedRedis(tmp_path / "replica", port=free_port())
    master.start()
    replica.start()
    proxy = TcpProxy(("127.0.0.1", int(master.port or 0)))
    await proxy.start()
    redis = make_client(proxy.url)
    direct = Redis.from_url(replica.url)
    try:
        await direct.replicaof("127.0.0.1", master.port)
        await fill_pool(redis)
        await redis.set("k", "before")
        await replicated(direct, "k", b"before")
        master.stop()
        await direct.replicaof("NO", "ONE")
        proxy.target = ("127.0.0.1", int(replica.port or 0))
        proxy.cut()
        assert await redis.get("k") == b"before"
        await redis.set("k", "after")  # a write: the new master takes it
        assert await direct.get("k") == b"after"
    finally:
        await redis.aclose()
        await direct.aclose()
        await proxy.aclose()
        replica.stop()
        master.stop()


# --- what is sent once more after a lost reply -------------------------------------

async def test_a_lost_reply_of_a_read_is_asked_again(proxy: TcpProxy) -> None:
    redis = connect(proxy.url)
    try:
        await redis.set("k", "v")
        proxy.swallow_replies = 1
        assert await redis.get("k") == b"v"
        assert proxy.swallow_replies == 0  # the first reply was lost indeed
    finally:
        await redis.aclose()


async def test_a_lost_reply_of_an_increment_is_never_sent_again(
        proxy: TcpProxy, tcp_server: EmbeddedRedis) -> None:
    """redis-py would send INCRBY up to ten times more (an id block, a balance: each
    time again); here it runs once and the caller learns the outcome is unknown."""
    redis = connect(proxy.url)
    direct = Redis.from_url(tcp_server.url)
    try:
        await redis.ping()  # the connection is open: the next reply is INCRBY's
        proxy.swallow_replies = 1
        with pytest.raises(ConnectionError):
            await redis.incrby("counter", 16)
        assert await direct.get("counter") == b"16"
        await redis.ping()  # (a fresh connection: its handshake is answered first)
        proxy.swallow_replies = 1
        with pytest.raises(StoreUnavailable):  # through a store: StoreUnavailable
            await Orders(redis).next_order_id()
        assert await direct.get(keys.ORDER_SEQ) == b"16"
    finally:
        await redis.aclose()
        await direct.aclose()


async def test_a_money_script_is_never_run_twice(
        proxy: TcpProxy, tcp_server: EmbeddedRedis) -> None:
    redis = connect(proxy.url)
    direct = Redis.from_url(tcp_server.url)
    ledger = Ledger(redis)
    try:
        await ledger.credit("alice", Decimal("10"), "topup", 0, note="start")
        await ledger.reserve("alice", Decimal("1"), 999)  # (the script is loaded now)
        proxy.swallow_replies = 1
        with pytest.raises(StoreUnavailable):
            await ledger.reserve("alice", Decimal("1"), 1000)
        await redis.ping()  # (a fresh connection: its handshake is answered first)
        proxy.swallow_replies = 1
        with pytest.raises(StoreUnavailable):
            await ledger.credit("alice", Decimal("2"), "topup", 0, note="more")
        # a release that settles the order runs at most once anyway: sent again
        await redis.ping()
        proxy.swallow_replies = 1
        await ledger.credit("alice", Decimal("1"), "release", 1000, note="back", settle=True)
        # 10 - 1 - 1 + 2 + 1: each once
        assert await ledger.balance("alice") == Decimal("11")
        assert await direct.xlen(keys.client_ledger("alice")) == 5
    finally:
        await redis.aclose()
        await direct.aclose()


async def test_a_pipeline_is_sent_again_only_when_all_of_it_may_be(
        proxy: TcpProxy, tcp_server: EmbeddedRedis) -> None:
    redis = connect(proxy.url)
    direct = Redis.from_url(tcp_server.url)
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.hset("h", "a", "1")
        pipe.sadd("s", "x")
        pipe.hget("h", "a")
        proxy.swallow_replies = 1
        assert await pipe.execute() == [1, 1, b"1"]
        assert proxy.swallow_replies == 0
        pipe = redis.pipeline(transaction=False)
        pipe.hset("h", "b", "2")
        pipe.hincrby("h", "n", 1)
        await redis.ping()
        proxy.swallow_replies = 1
        with pytest.raises(ConnectionError):
            await pipe.execute()
        assert await direct.hget("h", "n") == b"1"
    finally:
        await redis.aclose()
        await direct.aclose()


@pytest.mark.parametrize(("args", "expected"), [
    (("GET", "k"), True), (("HMGET", "h", "a"), True), (("HSET", "h", "a", "1"), True),
    (("SET", "k", "v"), True), (("SET", "k", "v", "NX", "PX", 100), False),
    (("SET", "k", "v", "GET"), False), (("INCRBY", "k", 1), False),
    (("HINCRBY", "h", "f", 1), False), (("HSETNX", "h", "f", "v"), False),
    (("XADD", "s", "*", "a", "b"), False), (("EVALSHA", "0" * 40, 0), False),
])
def test_what_may_be_sent_again(args: tuple[Any, ...], expected: bool) -> None:
    assert repeatable(args) is expected


def test_which_scripts_may_be_sent_again() -> None:
    def evalsha(source: str, *argv: Any, numkeys: int = 1) -> tuple[Any, ...]:
        sha = hashlib.sha1(source.encode()).hexdigest()
        return ("EVALSHA", sha, numkeys, *["k"] * numkeys, *argv)
    assert repeatable(evalsha(scripts.FLOOR, 10))
    assert repeatable(evalsha(scripts.RELEASE, "token"))
    assert not repeatable(evalsha(scripts.RESERVE, 100, 1, 0, "", "v", numkeys=3))
    assert repeatable(evalsha(scripts.CREDIT, 100, 1, 0, "release", "", "1", numkeys=4))
    assert not repeatable(evalsha(scripts.CREDIT, 100, 1, 0, "topup", "", "0", numkeys=4))
