"""The Redis client: opening it, and the one place redis-py's errors are translated.

`connect(url)` opens a standalone client (a blocking pool: a burst of requests
waits for a connection instead of failing), for `redis+sentinel://` one that asks
Redis Sentinel where the master is, or for `redis+cluster://` a Redis Cluster
client made to behave the same way (`BoundedCluster`). Every class of
`gateway.state` is decorated with `maps_redis_errors`, so a `RedisError`
(connection refused, timeout, error reply) leaves this package as
`StoreUnavailable` and nothing above it imports redis.

The pools and connections are `gateway.state.pools` (a connection the server
closed while idle is never handed out); what is sent again after a lost reply,
and the client that does it, `gateway.state.repeat` (only what may run twice).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError, RedisError
from redis.typing import EncodableT

from gateway.errors import StoreUnavailable
from gateway.state.pools import (
    POOL_WAIT_S,
    SENTINEL_SCHEME,
    TASKLESS,
    Connection,
    Pool,
    UnixConnection,
    no_retry,
    sentinel_client,
)
from gateway.state.repeat import Client, repeatable

__all__ = ["POOL_SIZE", "POOL_WAIT_S", "AnyRedis", "Client", "Connection", "RedisCluster",
           "UnixConnection", "connect", "repeatable"]

CLUSTER_SCHEME = "redis+cluster://"
POOL_SIZE = 64

AnyRedis = aioredis.Redis | RedisCluster

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def connect(url: str, pool_size: int = POOL_SIZE) -> AnyRedis:
    """A client for `url`: `redis://`, `rediss://`, `unix://`; `redis+cluster://host:port`
    opens a Redis Cluster client; `redis+sentinel://` one through Sentinel."""
    if url.startswith(CLUSTER_SCHEME):
        cluster = BoundedCluster.from_url("redis://" + url[len(CLUSTER_SCHEME):],
                                          max_connections=pool_size)
        assert isinstance(cluster, BoundedCluster)
        cluster.gate = asyncio.Semaphore(pool_size)
        return cluster
    if url.startswith(SENTINEL_SCHEME):
        return sentinel_client(url, pool_size)
    pool = Pool.from_url(url, max_connections=pool_size, timeout=POOL_WAIT_S,
                         retry=no_retry())
    # the URL's scheme chose redis-py's class (TCP, TLS, unix socket): ours of that kind
    pool.connection_class = TASKLESS.get(pool.connection_class, pool.connection_class)
    return Client.from_pool(pool)  # owns the pool: aclose() closes its sockets


_holding: ContextVar[bool] = ContextVar("holding_a_cluster_slot", default=False)


class BoundedCluster(RedisCluster):
    """redis-py's async RedisCluster, made to fail like the standalone client.

    - At most `pool_size` commands and pipelines are in flight at once; the rest
      wait (up to POOL_WAIT_S), as on the standalone client's blocking pool.
      redis-py's cluster nodes raise MaxConnectionsError at once instead, and a
      pipeline that meets it, or any connection error (a failover), closes every
      connection of the client: those of other requests in flight too.
    - A command whose connection was closed under it that way fails inside
      redis-py with AttributeError or RuntimeError, not a RedisError; here it is
      a ConnectionError, so it leaves `gateway.state` as StoreUnavailable (a write
      after an upstream add must reach the journal, not escape as a crash).
    """

    gate: asyncio.Semaphore

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        return await self.bounded(functools.partial(super().execute_command, *args, **kwargs))

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # which refuses it
        # (redis-py's typing protocol wants an attribute ClusterPipeline never sets)
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]

    async def bounded(self, run: Callable[[], Awaitable[R]]) -> R:
        if _holding.get():  # a pipeline's redirected command: already counted
            return await _closed_under(run)
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self.gate.acquire()
        except TimeoutError:
            raise ConnectionError(f"no Redis connection free in {POOL_WAIT_S} s") from None
        token = _holding.set(True)
        try:
            return await _closed_under(run)
        finally:
            _holding.reset(token)
            self.gate.release()


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, BoundedCluster)
        return await client.bounded(
            functools.partial(super().execute, raise_on_error, allow_redirections))


async def _closed_under(run: Callable[[], Awaitable[R]]) -> R:
    try:
        return await run()
    except (AttributeError, RuntimeError) as exc:  # its connection was closed under it
        raise ConnectionError(f"connection closed during the command: {exc!r}") from exc


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client answers bytes; typing says either)."""
    return value.decode() if isinstance(value, bytes) else value


def mapped(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The coroutine `fn`, raising StoreUnavailable where redis-py raised RedisError."""
    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
    return call


def maps_redis_errors(cls: C) -> C:
    """Class decorator: every coroutine method maps RedisError to StoreUnavailable."""
    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and not name.startswith("__"):
            setattr(cls, name, mapped(member))
    return cls


@mapped
async def fill_pool(redis: AnyRedis) -> None:
    """Open every connection of a standalone client's pool now, at start: opened in
    the middle of a burst they would pin the memory the burst took around them."""
    if isinstance(redis, RedisCluster):
        return  # one pool per node, opened as the slots are used
    pool = redis.connection_pool
    held = [await pool.get_connection()  # type: ignore[no-untyped-call]
            for _ in range(pool.max_connections)]
    try:
        await asyncio.gather(*(c.connect() for c in held))
    finally:
        for c in held:
            await pool.release(c)


@mapped
async def release_idle(redis: AnyRedis) -> None:
    """Disconnect the pooled connections no command is using (they reconnect when
    next needed): after a burst, their buffers go back."""
    if isinstance(redis, RedisCluster):
        return
    await redis.connection_pool.disconnect(inuse_connections=False)


@mapped
async def ping(redis: AnyRedis) -> None:
    await redis.ping()
