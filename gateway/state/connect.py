"""The Redis client: opening it, and the one place redis-py's errors are translated.

`connect(url)` opens a standalone client (a blocking pool: a burst of requests
waits for a connection instead of failing), for `redis+sentinel://` one that asks
Redis Sentinel where the master is, or for `redis+cluster://` a Redis Cluster
client made to behave the same way (`BoundedCluster`). Every class of
`gateway.state` is decorated with `maps_redis_errors`, so a `RedisError`
(connection refused, timeout, error reply) leaves this package as
`StoreUnavailable` and nothing above it imports redis.

Failures and repeats (standalone and Sentinel clients):
- A pooled connection the server closed while it sat idle (Redis restarted, a
  failover, a proxy that cut it) is never handed out: the pool finds it closed,
  drops it and opens a fresh one before the command is sent.
- redis-py repeats any command up to ten times after a connection error or a
  timeout; an INCRBY or a money script whose reply was lost would then run twice.
  Here redis-py repeats nothing. A command (or pipeline) that failed that way is
  sent once more only when running it twice changes nothing more than running it
  once (`repeatable`): reads, writes that set a value, and the scripts
  `scripts.REPEATABLE` names. Anything else fails as StoreUnavailable, and the
  caller decides (the dispatcher journals an order's outcome).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from gateway.errors import ConfigError, StoreUnavailable
from gateway.state import scripts

CLUSTER_SCHEME = "redis+cluster://"
SENTINEL_SCHEME = "redis+sentinel://"
POOL_SIZE = 64
POOL_WAIT_S = 10.0

AnyRedis = aioredis.Redis | RedisCluster

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def _no_retry() -> Retry:
    """redis-py repeats nothing by itself (see the module's docstring)."""
    return Retry(NoBackoff(), 0)


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
        return _sentinel_client(url, pool_size)
    pool = Pool.from_url(url, max_connections=pool_size, timeout=POOL_WAIT_S,
                         retry=_no_retry())
    # the URL's scheme chose redis-py's class (TCP, TLS, unix socket): ours of that kind
    pool.connection_class = _TASKLESS.get(pool.connection_class, pool.connection_class)
    return Client.from_pool(pool)  # owns the pool: aclose() closes its sockets


class _FastIdle:
    """A short way to an idle connection, for redis-py's blocking pools.

    redis-py's `get_connection` takes the pool's condition, a timeout scope, its
    retry machinery around an already open connection and its observability hooks
    for every command. When a connection is idle this takes it at once and only
    checks what matters: that it is open and has nothing unread. One that is dirty,
    or that the server closed while it sat idle (reading it raises), is closed and
    opened afresh before it is handed out. A pool with none idle (a burst) waits in
    redis-py's way, bounded by `timeout`.
    """

    _available_connections: list[Any]
    _in_use_connections: set[Any]
    _in_maintenance: bool

    async def get_connection(self, command_name: Any = None, *keys: Any,
                             **options: Any) -> Any:
        idle: list[Any] = self._available_connections
        if not idle or self._in_maintenance:
            return await super().get_connection()  # type: ignore[misc]
        connection = idle.pop()
        self._in_use_connections.add(connection)
        try:
            if connection.is_connected:
                try:
                    dirty = await connection.can_read()
                except (ConnectionError, RedisTimeoutError, OSError):
                    dirty = True  # closed by the server (or a proxy) while idle
                if dirty:
                    await connection.disconnect()
            await self.ensure_connection(connection)  # type: ignore[attr-defined]
        except BaseException:
            await self.release(connection)  # type: ignore[attr-defined]
            raise
        return connection


class Pool(_FastIdle, aioredis.BlockingConnectionPool):
    """redis-py's blocking pool, with a short way to an idle connection (`_FastIdle`)."""


# --- repeating a command that failed -----------------------------------------------

# Commands that can run twice with the effect of once: reads, and writes that set a
# value (not those that add to one, append, or set only if absent: their second run
# answers differently, and the caller would act on that answer).
_REPEATABLE = frozenset({
    "PING", "INFO", "GET", "MGET", "EXISTS", "TTL", "PTTL", "TYPE", "STRLEN",
    "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSCAN",
    "SMEMBERS", "SISMEMBER", "SCARD", "SSCAN", "LRANGE", "LLEN", "LINDEX",
    "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCORE", "ZCARD",
    "ZCOUNT", "ZSCAN", "XRANGE", "XREVRANGE", "XLEN", "SCAN", "DBSIZE", "SCRIPT LOAD",
    "SET", "MSET", "HSET", "HMSET", "HDEL", "SADD", "SREM", "ZADD", "ZREM", "DEL",
    "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST",
})
_SET_ONCE = frozenset({b"NX", b"XX", b"GET", "NX", "XX", "GET", b"nx", "nx", b"xx", "xx"})


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


# script sha -> predicate on its ARGV: True when that call may run twice
_REPEATABLE_SCRIPTS: dict[str, Callable[[tuple[Any, ...]], bool]] = {
    _sha(source): when for source, when in scripts.REPEATABLE}


def repeatable(args: tuple[Any, ...]) -> bool:
    """Whether the command `args` (name first) may be sent again after it failed with
    its outcome unknown: running it twice has the effect of running it once."""
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVALSHA_RO"):
        when = _REPEATABLE_SCRIPTS.get(str(args[1]))
        if when is None:
            return False
        numkeys = int(args[2])
        return when(tuple(args[3 + numkeys:]))
    if name == "SET":  # SET k v NX / XX / GET: its answer depends on the first run
        return not any(a in _SET_ONCE for a in args[3:] if isinstance(a, str | bytes))
    return name in _REPEATABLE


class Client(aioredis.Redis):
    """redis-py's client, sending a command once more after a connection error or a
    timeout only when it is `repeatable` (on a fresh connection: the failed one was
    closed)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        send = super().execute_command
        try:
            return await send(*args, **options)  # type: ignore[no-untyped-call]
        except (ConnectionError, RedisTimeoutError):
            if not repeatable(args):
                raise
        return await send(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction,
                         shard_hint)


class _Pipeline(Pipeline):
    """A pipeline sent once more after a connection error or a timeout when every
    command in it is `repeatable` (and it watches no key)."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, loaded = list(self.command_stack), set(self.scripts)
        try:
            return await super().execute(raise_on_error)
        except (ConnectionError, RedisTimeoutError):
            if self.watching or not all(repeatable(args) for args, _ in stack):
                raise
        self.command_stack, self.scripts = stack, loaded
        return await super().execute(raise_on_error)


# --- Sentinel ----------------------------------------------------------------------

def _sentinel_client(url: str, pool_size: int) -> aioredis.Redis:
    """`redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`: the master
    of `service`, as the sentinels at those addresses name it now. A failover closes
    the connections to the old master (a READONLY answer does too), and the next
    command asks the sentinels again."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit("redis://" + url[len(SENTINEL_SCHEME):])
    hosts = parts.netloc.rpartition("@")[2]
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path:
        raise ConfigError(f"{SENTINEL_SCHEME}host:port[,host:port]/service[/db] "
                          f"expected, not {url.split('@')[-1]}")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sentinel address {host_port!r}: host:port expected")
        sentinels.append((host.strip("[]"), int(port)))
    password = unquote(parts.password) if parts.password else None
    db = int(path[1]) if len(path) > 1 else 0
    options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S,
                               "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    manager = Sentinel(  # type: ignore[no-untyped-call]
        sentinels, sentinel_kwargs=dict(options, password=password), **options)
    pool = SentinelPool(  # type: ignore[no-untyped-call]
        path[0], manager, password=password, db=db, max_connections=pool_size,
        timeout=POOL_WAIT_S, retry=_no_retry(), connection_class=SentinelConnection)
    return Client.from_pool(pool)


SENTINEL_TIMEOUT_S = 5.0


class SentinelPool(_FastIdle, SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool, blocking like `Pool` (a burst waits for a connection), with the
    same short way to an idle connection."""


class _TasklessSend:
    """redis-py's `send_packed_command`, with its write bounded by `asyncio.timeout`.

    redis-py bounds each write with `asyncio.wait_for` (its default socket timeout
    is 5 s), and in Python 3.11 `wait_for` runs the write in a new task: one task,
    and one more turn of the event loop, per command sent. The same bound without a
    task; every error is what redis-py raises (and the connection is closed) as before.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        conn: Any = self
        timeout = conn.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if not conn.is_connected:
            await conn.connect_check_health(check_health=False)
        if check_health:
            await conn.check_health()
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            async with asyncio.timeout(timeout):
                conn._writer.writelines(command)
                await conn._writer.drain()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:  # a half-sent command: the connection cannot be reused
            await conn.disconnect(nowait=True)
            raise


class Connection(_TasklessSend, aioredis.Connection):
    pass


class SSLConnection(_TasklessSend, aioredis.SSLConnection):
    pass


class UnixConnection(_TasklessSend, aioredis.UnixDomainSocketConnection):
    pass


class SentinelConnection(_TasklessSend, SentinelManagedConnection):
    pass


_TASKLESS: dict[type[Any], type[Any]] = {
    aioredis.Connection: Connection, aioredis.SSLConnection: SSLConnection,
    aioredis.UnixDomainSocketConnection: UnixConnection}


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
