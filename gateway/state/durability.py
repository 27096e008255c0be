"""What must hold before an answer that depends on a write (`gateway.durability`).

An order's outcome (placed or unknown: its upstream id, the money reserved for it,
the id block it came from) is written to Redis before the client is answered. A
write Redis took can still be lost: a power cut before Redis wrote it to disk, or a
failover to a replica the write had not reached. Modes:

    written    Redis took it (the reply came back).
    fsync      Redis wrote it to disk: the server runs `appendfsync always` (the
               embedded Redis does in this mode), or `WAITAOF 1 0` where the server
               has it (Redis 7.2+, append-only file on).
    replicas   `durability_replicas` replicas have it (`WAIT n timeout`).
    auto       (the default) the safest of these the Redis in use supports: replicas
               when it has any connected, else fsync when it can, else written.

A replication offset is one stream for the whole server, so the barrier is sent
once per outcome, on the connection of the outcome's own write (the same pipeline):
it covers every earlier write of that order, the reservation and the id block too.
When the barrier is not met within `durability_timeout_ms`, the outcome also goes to
the local journal (`gateway.state.journal`), as when Redis fails, and is replayed
(with the barrier again) until it holds: an answered order is never only in a
place that can lose it.

The server is looked at (`watch`) at start and then every WATCH_S: the replicas
connected now, and its replication id. A new replication id means another server
answers at this address (a failover, or a restart from an older file): the id
sequences may have gone back (`gateway.state.orders` then moves past every id this
process handed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from gateway.errors import StoreUnavailable
from gateway.state.connect import AnyRedis, maps_redis_errors, text

log = logging.getLogger("gateway.durability")

Mode = Literal["auto", "written", "fsync", "replicas"]
WATCH_S = 1.0


@dataclass(frozen=True, slots=True)
class Barrier:
    """The command that holds an answer back until its writes are durable, and the
    acknowledgements it must count."""

    command: tuple[Any, ...] | None  # None: the write alone is enough
    need: int = 0
    what: str = "written"

    def met(self, reply: Any) -> bool:
        if self.command is None:
            return True
        if self.command[0] == "WAITAOF":  # [local fsyncs, replicas that fsync'd]
            local, _ = reply
            return int(local) >= self.need
        return int(reply) >= self.need


WRITTEN = Barrier(None)


@dataclass(frozen=True, slots=True)
class ServerView:
    version: tuple[int, ...]
    aof: bool
    fsync_always: bool | None  # None: CONFIG GET refused (a managed Redis)
    replicas: int
    replid: str


def decide(mode: Mode, server: ServerView, replicas: int, timeout_ms: int) -> Barrier:
    """The barrier for `mode` on this server (pure: tested without Redis)."""
    can_waitaof = server.version >= (7, 2) and server.aof
    if mode == "written":
        return WRITTEN
    if mode == "replicas" or (mode == "auto" and server.replicas > 0):
        need = replicas if mode == "replicas" else min(replicas, server.replicas)
        return Barrier(("WAIT", need, timeout_ms), need, f"{need} replica(s)")
    if server.fsync_always:
        return Barrier(None, what="fsync (appendfsync always)")
    if can_waitaof:
        return Barrier(("WAITAOF", 1, 0, timeout_ms), 1, "fsync (WAITAOF)")
    if mode == "fsync":
        log.error("durability fsync: this Redis can neither WAITAOF (7.2+ with "
                  "appendonly yes) nor runs appendfsync always; answers wait for the "
                  "write only", extra={"version": ".".join(map(str, server.version))})
    return WRITTEN


@maps_redis_errors
class Durability:
    """The barrier in force for this process, kept up to date by `watch()`."""

    def __init__(self, redis: AnyRedis, mode: Mode = "auto", replicas: int = 1,
                 timeout_ms: int = 500) -> None:
        self._redis = redis
        self.mode = mode
        self._replicas = replicas
        self._timeout_ms = timeout_ms
        self.barrier = WRITTEN
        self.replid = ""
        self.moved = 0  # replication id changes seen (another server at the address)
        self._task: asyncio.Task[None] | None = None

    def configure(self, mode: Mode, replicas: int, timeout_ms: int) -> None:
        """The config's settings (at start and at each reload; the next `watch` applies)."""
        self.mode, self._replicas, self._timeout_ms = mode, replicas, timeout_ms

    def start(self, on_moved: Callable[[], None]) -> None:
        """Look at the server every WATCH_S; `on_moved` when another one answers."""
        self._task = asyncio.create_task(self._run(on_moved))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, on_moved: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                if await self.watch():
                    on_moved()
            except StoreUnavailable:
                continue  # Redis is away: the next look tries again
            except Exception:  # the loop must outlive any one bug
                log.exception("durability watch failed")

    async def watch(self) -> bool:
        """Look at the server again; True when its replication id changed since the
        last look (not at the first)."""
        if isinstance(self._redis, RedisCluster):  # one barrier per shard: writes only
            return False
        view = await self._view()
        barrier = decide(self.mode, view, self._replicas, self._timeout_ms)
        if barrier != self.barrier:
            log.info("durability", extra={"mode": self.mode, "now": barrier.what})
        self.barrier = barrier
        moved = bool(self.replid) and view.replid != self.replid
        if moved:
            self.moved += 1
            log.warning("redis: another server answers (its replication id changed)",
                        extra={"was": self.replid, "now": view.replid})
        self.replid = view.replid
        return moved

    async def _view(self) -> ServerView:
        info = await self._redis.info()
        version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:3]
                        if p.isdigit())
        try:
            fsync = await self._redis.config_get("appendfsync")
            always: bool | None = text(fsync.get("appendfsync") or b"") == "always"
        except ResponseError:  # CONFIG is often renamed away on managed Redis
            always = None
        return ServerView(
            version=version, aof=bool(int(info.get("aof_enabled", 0))),
            fsync_always=always and bool(int(info.get("aof_enabled", 0))),
            replicas=int(info.get("connected_slaves", 0)) if info.get("role") == "master"
            else 0,
            replid=str(info.get("master_replid", "")))
