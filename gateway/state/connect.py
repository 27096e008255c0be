"""The Redis client: opening it, and the one place redis-py's errors are translated.

`connect(url)` opens a standalone client (a blocking pool: a burst of requests
waits for a connection instead of failing) or, for `redis+cluster://`, a Redis
Cluster client. Every class of `gateway.state` is decorated with
`maps_redis_errors`, so a `RedisError` (connection refused, timeout, error reply)
leaves this package as `StoreUnavailable` and nothing above it imports redis.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable

CLUSTER_SCHEME = "redis+cluster://"
POOL_SIZE = 256
POOL_WAIT_S = 10.0

AnyRedis = aioredis.Redis | RedisCluster

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def connect(url: str, pool_size: int = POOL_SIZE) -> AnyRedis:
    """A client for `url`; `redis+cluster://host:port` opens a Redis Cluster client."""
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME):],
                                     max_connections=pool_size)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_WAIT_S)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its sockets


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
async def ping(redis: AnyRedis) -> None:
    await redis.ping()
