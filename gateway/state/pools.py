"""Connection pools and connections of the standalone and Sentinel clients.

- `Pool`: redis-py's blocking pool (a burst waits for a connection instead of
  failing), with a short way to an idle connection (`_FastIdle`) that still never
  hands out one the server closed while it sat idle (Redis restarted, a failover,
  a proxy that cut it): it is dropped and opened afresh before the command is sent.
- Connections send each command without a task of their own (`_TasklessSend`).
- `sentinel_client`: `redis+sentinel://`, the master the sentinels name.
- redis-py repeats nothing on these (`no_retry`): `gateway.state.repeat` decides.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import ConfigError
from gateway.state.repeat import Client

SENTINEL_SCHEME = "redis+sentinel://"
POOL_WAIT_S = 10.0  # how long a command waits for a free connection
SENTINEL_TIMEOUT_S = 5.0


def no_retry() -> Retry:
    """redis-py repeats nothing by itself (see the module's docstring)."""
    return Retry(NoBackoff(), 0)


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


TASKLESS: dict[type[Any], type[Any]] = {
    aioredis.Connection: Connection, aioredis.SSLConnection: SSLConnection,
    aioredis.UnixDomainSocketConnection: UnixConnection}


def sentinel_client(url: str, pool_size: int) -> aioredis.Redis:
    """`redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`: the master
    of `service`, as the sentinels at those addresses name it now. A failover closes
    the connections to the old master (a READONLY answer does too), and the next
    command asks the sentinels again."""
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
        timeout=POOL_WAIT_S, retry=no_retry(), connection_class=SentinelConnection)
    return Client.from_pool(pool)



class SentinelPool(_FastIdle, SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool, blocking like `Pool` (a burst waits for a connection), with the
    same short way to an idle connection."""
