"""What the Redis client sends once more after a lost reply, and the client that does.

redis-py repeats any command up to ten times after a connection error or a timeout;
an INCRBY or a money script whose reply was lost would then run twice. The pools
here (`gateway.state.pools`) have redis-py repeat nothing. `Client` sends a command
(or a pipeline) that failed that way once more, on a fresh connection, only when
running it twice changes nothing more than running it once (`repeatable`): reads,
writes that set a value, and the scripts `scripts.REPEATABLE` names. Anything else
fails, and the caller decides (the dispatcher journals an order's outcome).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.state import scripts

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
