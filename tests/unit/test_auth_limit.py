"""Failed authentication is limited per real client address, and the block is a Redis
key that every replica sees; a valid key from another address is never blocked."""

from __future__ import annotations

import socket

import pytest
import redis

from gateway.clock import ManualClock
from gateway.errors import StoreUnavailable, TooManyRequests
from gateway.state import keys, limits
from gateway.state.connect import connect
from gateway.state.limits import AUTH_FAILURES, AUTH_WINDOW_S, RateLimiter
from inprocess import ALICE, App, State
from peer_client import post_from

PROXY = "127.0.0.1"
TRUSTED = pytest.mark.gateway(trusted_proxies=[PROXY])


def via_proxy(client: str) -> dict[str, str]:
    return {"X-Forwarded-For": client}


def guess(app: App, client: str, n: int) -> list[int]:
    return [post_from(app, PROXY, via_proxy(client), key=f"guess-{i}",
                      action="balance").status_code for i in range(n)]


@TRUSTED
async def test_21_bad_keys_block_that_address_only(app: App, sync_redis: redis.Redis) -> None:
    codes = guess(app, "203.0.113.1", AUTH_FAILURES + 1)
    assert codes == [401] * AUTH_FAILURES + [429]
    # that address is refused even with a right key: guessing learns nothing
    r = post_from(app, PROXY, via_proxy("203.0.113.1"), key=ALICE, action="balance")
    assert r.status_code == 429 and r.json() == {"error": "Too many requests"}
    # a valid key from another address, through the same proxy, is served
    for other in ("203.0.113.2", "2001:db8::2"):
        r = post_from(app, PROXY, via_proxy(other), key=ALICE, action="balance")
        assert r.status_code == 200 and "balance" in r.json()
    # the proxy itself is not blocked either
    assert post_from(app, PROXY, key=ALICE, action="balance").status_code == 200
    ttl = sync_redis.ttl(keys.auth_block("203.0.113.1"))
    assert 0 < ttl <= AUTH_WINDOW_S


@TRUSTED
async def test_twenty_failures_do_not_block_a_valid_key(app: App) -> None:
    assert guess(app, "203.0.113.3", AUTH_FAILURES) == [401] * AUTH_FAILURES
    r = post_from(app, PROXY, via_proxy("203.0.113.3"), key=ALICE, action="balance")
    assert r.status_code == 200


@TRUSTED
async def test_the_block_is_seen_by_another_replica(app: App, state: State) -> None:
    guess(app, "203.0.113.4", AUTH_FAILURES + 1)
    # `state` has resources of its own over the same Redis: another replica
    with pytest.raises(TooManyRequests):
        await state.r.limiter.refuse_blocked("203.0.113.4")
    await state.r.limiter.refuse_blocked("203.0.113.5")


async def test_an_untrusted_peer_cannot_spread_its_failures(app: App) -> None:
    """Without trusted proxies, X-Forwarded-For is the client's own claim: ignored."""
    codes = [post_from(app, "198.51.100.9", via_proxy(f"203.0.113.{i}"), key=f"g{i}",
                       action="balance").status_code for i in range(AUTH_FAILURES + 1)]
    assert codes[-1] == 429
    r = post_from(app, "198.51.100.9", via_proxy("203.0.113.200"), key=ALICE,
                  action="balance")
    assert r.status_code == 429
    assert post_from(app, "198.51.100.10", key=ALICE, action="balance").status_code == 200


async def test_a_block_ends_with_its_key(anyio_backend: str, redis_url: str) -> None:
    clock = ManualClock()
    one, two, three = connect(redis_url), connect(redis_url), connect(redis_url)
    a, b = RateLimiter(one, clock), RateLimiter(two, clock)
    try:
        for _ in range(AUTH_FAILURES):
            await a.failed_auth("192.0.2.1")
        await b.refuse_blocked("192.0.2.1")  # not yet
        with pytest.raises(TooManyRequests):
            await b.failed_auth("192.0.2.1")
        for limiter in (a, b):
            with pytest.raises(TooManyRequests):
                await limiter.refuse_blocked("192.0.2.1")
        # the key expires (a minute later): once the replica's memory of it ends too,
        # the address is served again
        await one.delete(keys.auth_block("192.0.2.1"), keys.auth_count("192.0.2.1"))
        clock.advance(AUTH_WINDOW_S + 1)
        await a.refuse_blocked("192.0.2.1")
        await b.refuse_blocked("192.0.2.1")
        # "not blocked" is never believed: a block another replica sets applies here
        # at once, with no time passing
        c = RateLimiter(three, clock)
        await c.refuse_blocked("192.0.2.9")
        await c.attempt("192.0.2.9", right=True)
        await one.set(keys.auth_block("192.0.2.9"), "1", ex=AUTH_WINDOW_S)
        with pytest.raises(TooManyRequests):
            await c.attempt("192.0.2.9", right=True)
        with pytest.raises(TooManyRequests):
            c.refuse_known("192.0.2.9")  # remembered now: refused with no round trip
    finally:
        await one.aclose()
        await two.aclose()
        await three.aclose()


async def test_a_wrong_key_is_counted_for_one_window_only(
        state: State, sync_redis: redis.Redis) -> None:
    """The failure count expires with its window: twenty wrong keys spread over a day
    never block an address."""
    with pytest.raises(TooManyRequests):
        for _ in range(AUTH_FAILURES + 1):
            await state.r.limiter.attempt("203.0.113.20", right=False)
    assert sync_redis.get(keys.auth_count("203.0.113.20")) == b"21"
    assert 0 < sync_redis.ttl(keys.auth_count("203.0.113.20")) <= AUTH_WINDOW_S
    await state.r.limiter.attempt("203.0.113.21", right=False)
    assert sync_redis.get(keys.auth_count("203.0.113.21")) == b"1"
    assert 0 < sync_redis.ttl(keys.auth_count("203.0.113.21")) <= AUTH_WINDOW_S


async def test_a_block_without_expiry_refuses_every_key_and_is_not_remembered(
        state: State, sync_redis: redis.Redis) -> None:
    """A block set by hand with no expiry (PTTL -1) refuses a right key too, on both
    paths; it is not kept in the replica's memory, so deleting the key lifts it."""
    limiter = state.r.limiter
    sync_redis.set(keys.auth_block("203.0.113.30"), "1")
    with pytest.raises(TooManyRequests):
        await limiter.refuse_blocked("203.0.113.30")
    with pytest.raises(TooManyRequests):
        await limiter.attempt("203.0.113.30", right=True)
    assert sync_redis.get(keys.auth_count("203.0.113.30")) is None, "nothing counted"
    sync_redis.delete(keys.auth_block("203.0.113.30"))
    limiter.refuse_known("203.0.113.30")
    await limiter.refuse_blocked("203.0.113.30")
    await limiter.attempt("203.0.113.30", right=True)


async def test_a_block_with_expiry_is_remembered_until_it_ends(
        state: State, sync_redis: redis.Redis) -> None:
    limiter = state.r.limiter
    sync_redis.set(keys.auth_block("203.0.113.31"), "1", px=5000)
    with pytest.raises(TooManyRequests):
        await limiter.attempt("203.0.113.31", right=True)
    sync_redis.delete(keys.auth_block("203.0.113.31"))
    with pytest.raises(TooManyRequests):
        limiter.refuse_known("203.0.113.31")  # remembered: no round trip
    state.clock.advance(5.001)
    limiter.refuse_known("203.0.113.31")  # its end passed: forgotten
    await limiter.attempt("203.0.113.31", right=True)


async def block(limiter: RateLimiter, address: str) -> None:
    """Twenty-one wrong keys: the last one sets the block (60 s, from the script)."""
    for _ in range(20):
        await limiter.attempt(address, right=False)
    with pytest.raises(TooManyRequests):
        await limiter.attempt(address, right=False)


async def test_a_replica_remembers_a_block_for_exactly_the_window(
        state: State, sync_redis: redis.Redis) -> None:
    limiter = state.r.limiter
    await block(limiter, "203.0.113.40")
    assert 0 < sync_redis.ttl(keys.auth_block("203.0.113.40")) <= 60
    sync_redis.delete(keys.auth_block("203.0.113.40"))  # only the memory refuses now
    state.clock.advance(59.96875)  # (steps exact in binary: the clock lands on 60.0)
    with pytest.raises(TooManyRequests):
        limiter.refuse_known("203.0.113.40")
    state.clock.advance(0.03125)  # 60 s: the block has ended
    limiter.refuse_known("203.0.113.40")
    await limiter.refuse_blocked("203.0.113.40")


async def test_a_block_seen_before_the_key_is_remembered(
        state: State, sync_redis: redis.Redis) -> None:
    limiter = state.r.limiter
    sync_redis.set(keys.auth_block("203.0.113.41"), "1", ex=60)
    with pytest.raises(TooManyRequests):
        await limiter.refuse_blocked("203.0.113.41")
    sync_redis.delete(keys.auth_block("203.0.113.41"))
    with pytest.raises(TooManyRequests):
        limiter.refuse_known("203.0.113.41")


async def test_remembered_blocks_are_bounded(
        state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the bound, ended blocks are dropped first; if none has ended, all are."""
    monkeypatch.setattr(limits, "_KNOWN_MAX", 2)
    limiter = state.r.limiter
    await block(limiter, "203.0.113.50")
    state.clock.advance(61)  # .50's block has ended (in memory; Redis keeps its key)
    await block(limiter, "203.0.113.51")
    await block(limiter, "203.0.113.52")  # at the bound: .50 dropped, .51 kept
    assert set(limiter._blocked) == {"203.0.113.51", "203.0.113.52"}
    await block(limiter, "203.0.113.53")  # at the bound, none ended: all dropped
    assert set(limiter._blocked) == {"203.0.113.53"}


async def test_the_token_bucket_refuses_past_its_burst(state: State) -> None:
    limiter = state.r.limiter
    await limiter.check("carol", rate=1.0, burst=2)
    await limiter.check("carol", rate=1.0, burst=2)
    with pytest.raises(TooManyRequests):
        await limiter.check("carol", rate=1.0, burst=2)
    state.clock.advance(0.9995)  # 999 ms on the bucket's clock: 0.999 of a token
    with pytest.raises(TooManyRequests):
        await limiter.check("carol", rate=1.0, burst=2)
    state.clock.advance(0.0005)  # 1,000 ms: one token
    await limiter.check("carol", rate=1.0, burst=2)
    with pytest.raises(TooManyRequests):
        await limiter.check("carol", rate=1.0, burst=2)


async def test_without_a_burst_the_bucket_holds_one_second_of_rate(state: State) -> None:
    for _ in range(3):
        await state.r.limiter.check("dave", rate=3.0, burst=None)
    with pytest.raises(TooManyRequests):
        await state.r.limiter.check("dave", rate=3.0, burst=None)


@pytest.mark.anyio
async def test_with_redis_down_a_wrong_key_is_not_answered_and_a_right_one_is() -> None:
    """Nothing can be counted: a wrong key is refused with the store's error (never
    answered as merely wrong), a right key (known from memory) is answered."""
    with socket.socket() as probe:  # a port just freed: no Redis there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis_down = connect(f"redis://127.0.0.1:{port}/0")
    limiter = RateLimiter(redis_down, ManualClock())
    try:
        with pytest.raises(StoreUnavailable):
            await limiter.attempt("203.0.113.60", right=False)
        await limiter.attempt("203.0.113.60", right=True)
        await limiter.refuse_blocked("203.0.113.60")
    finally:
        await redis_down.aclose()


async def test_a_rate_below_one_a_second_still_allows_one_call(state: State) -> None:
    await state.r.limiter.check("ed", rate=0.5, burst=None)
    with pytest.raises(TooManyRequests):
        await state.r.limiter.check("ed", rate=0.5, burst=None)
