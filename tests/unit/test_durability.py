"""Durability (`gateway.durability`): what holds before an order's outcome is
answered, and a lossy failover that loses nothing the client was told."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chaos.proxy import TcpProxy
from gateway.actions import Actions
from gateway.clock import ManualClock
from gateway.errors import StoreUnavailable
from gateway.ops.admin import keys_check
from gateway.state import keys
from gateway.state.claims import Claims, Owned
from gateway.state.connect import connect
from gateway.state.durability import WRITTEN, Barrier, Durability, ServerView, decide
from gateway.state.embedded import EmbeddedRedis, free_port
from gateway.wiring import open_resources
from inprocess import BOB, State, make_settings
from upstream import FakeProvider, transport_for

pytestmark = pytest.mark.anyio


def view(version: tuple[int, ...] = (7, 2, 4), aof: bool = True,
         fsync_always: bool | None = False, replicas: int = 0) -> ServerView:
    return ServerView(version, aof, fsync_always, replicas, "r1")


@pytest.mark.parametrize(("mode", "server", "expected"), [
    # auto: replicas when any are connected (at most durability_replicas) ...
    ("auto", view(replicas=2), Barrier(("WAIT", 1, 500), 1, "1 replica(s)")),
    # ... else the server's own fsync, else WAITAOF, else the write alone
    ("auto", view(fsync_always=True), Barrier(None, what="fsync (appendfsync always)")),
    ("auto", view(), Barrier(("WAITAOF", 1, 0, 500), 1, "fsync (WAITAOF)")),
    ("auto", view(version=(6, 2, 14)), WRITTEN),
    ("auto", view(aof=False), WRITTEN),
    ("auto", view(fsync_always=None, version=(6, 2, 14)), WRITTEN),
    ("written", view(replicas=3, fsync_always=True), WRITTEN),
    ("fsync", view(replicas=1), Barrier(("WAITAOF", 1, 0, 500), 1, "fsync (WAITAOF)")),
    ("fsync", view(version=(6, 2, 14)), WRITTEN),  # cannot: logged, the write alone
    # replicas asked for and none connected: WAIT all the same (it times out: journaled)
    ("replicas", view(), Barrier(("WAIT", 1, 500), 1, "1 replica(s)")),
])
def test_the_barrier_each_mode_gives(mode: str, server: ServerView, expected: Barrier) -> None:
    assert decide(mode, server, 1, 500) == expected  # type: ignore[arg-type]


def test_what_a_barrier_counts() -> None:
    assert Barrier(("WAIT", 2, 500), 2).met(2) and not Barrier(("WAIT", 2, 500), 2).met(1)
    waitaof = Barrier(("WAITAOF", 1, 0, 500), 1)
    assert waitaof.met([1, 0]) and not waitaof.met([0, 0])
    assert WRITTEN.met(None)


async def test_the_embedded_redis_writes_to_disk_before_it_answers(tmp_path: Path) -> None:
    """The default durability on the embedded Redis: `appendfsync always`."""
    with EmbeddedRedis(tmp_path / "redis") as server:
        redis = Redis.from_url(server.url)
        try:
            d = Durability(redis)
            await d.watch()
            assert d.barrier == Barrier(None, what="fsync (appendfsync always)")
        finally:
            await redis.aclose()


# --- a lossy failover ---------------------------------------------------------------

@dataclass
class Pair:
    """A master and a replica whose link goes through `link` (a partition can cut it),
    both behind `front`: the one address the gateway knows."""

    master: EmbeddedRedis
    replica: EmbeddedRedis
    link: TcpProxy
    front: TcpProxy

    async def fail_over(self) -> None:
        """The master dies; the replica (which missed what came over the cut link) is
        promoted; the address moves to it and the old connections are cut."""
        assert self.master._proc is not None
        self.master._proc.send_signal(signal.SIGKILL)
        self.master._proc.wait()
        replica = Redis.from_url(self.replica.url)
        await replica.replicaof("NO", "ONE")
        await replica.aclose()
        self.front.target = ("127.0.0.1", int(self.replica.port or 0))
        self.front.cut()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    master = EmbeddedRedis(tmp_path / "master", port=free_port())
    replica = EmbeddedRedis(tmp_path / "replica", port=free_port())
    master.start()
    replica.start()
    link = TcpProxy(("127.0.0.1", int(master.port or 0)))
    front = TcpProxy(("127.0.0.1", int(master.port or 0)))
    await link.start()
    await front.start()
    r = Redis.from_url(replica.url)
    try:
        await r.replicaof("127.0.0.1", link.port)
        await until(lambda: _link_up(r), "the replica in sync")
        yield Pair(master, replica, link, front)
    finally:
        await r.aclose()
        await front.aclose()
        await link.aclose()
        replica.stop()
        master.stop()


async def _link_up(r: Redis) -> bool:
    return (await r.info("replication")).get("master_link_status") == "up"


async def until(check: object, what: str, within_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.02)


async def test_a_lossy_failover_loses_no_order_the_client_was_told_of(
        pair: Pair, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    """The replica's link is cut; two adds are answered; the master dies and the
    replica, which never got them, is promoted. Every order the client was told of
    answers `status`, the ledger matches and no id is answered twice (main of
    dc7389a answered `Incorrect order ID` for both)."""
    settings = make_settings(durability_timeout_ms=200)
    async with open_resources(settings, pair.front.url, transport=transport_for(providers),
                              clock=clock, journal_dir=tmp_path / "journal") as r:
        actions = Actions(r)
        st = State(r, actions, clock, providers)
        try:
            await r.ledger.credit("bob", Decimal("100"), "topup", note="start")
            kept, _ = await st.add(BOB, service=1, link="https://t.co/a", quantity=100)
            assert not r.recovery.journal.waiting  # a replica took it: nothing journaled
            pair.link.blackhole = True  # the replica hears nothing more
            told = [(await st.add(BOB, service=1, link=f"https://t.co/{n}",
                                  quantity=100))[0] for n in "bc"]
            assert r.recovery.journal.waiting  # not on a replica in time: journaled too
            await pair.fail_over()
            # the journal is replayed into the promoted replica (the recovery loop)
            await until(lambda: _settled(r.recovery.journal), "journal replayed")
            for order in [kept, *told]:
                answer = await st.act("status", BOB, order=order)
                assert getattr(answer, "status", None) == "Pending", (order, answer)
            after, _ = await st.add(BOB, service=1, link="https://t.co/d", quantity=100)
            assert after not in (kept, *told)
            assert after > max(told)
            ok, lines = await keys_check(r.redis, None)
            assert ok, lines
        finally:
            await actions.aclose()


async def _settled(journal: object) -> bool:
    return not journal.waiting  # type: ignore[attr-defined]


async def test_an_idempotency_claim_a_failover_could_lose_is_not_kept(pair: Pair) -> None:
    """A claim taken on the master while its replica hears nothing: a failover could
    lose it and let a retry at another replica place the order again. The claim is
    let go and the request answered as an outage (try again); nothing is sent."""
    redis = connect(pair.front.url)
    try:
        durability = Durability(redis, timeout_ms=200)
        await durability.watch()
        assert durability.barrier.command == ("WAIT", 1, 200)
        claims = Claims(redis, ManualClock(), 30.0, durability)
        assert isinstance(await claims.claim("alice", "k1", "f", 60, 1001), Owned)
        pair.link.blackhole = True
        with pytest.raises(StoreUnavailable):
            await claims.claim("alice", "k2", "f", 60, 1002)
        assert await redis.exists(keys.once("alice", "k2")) == 0  # let go
        assert await redis.exists(keys.once("alice", "k1")) == 1
    finally:
        await redis.aclose()
