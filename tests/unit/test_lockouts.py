"""Lockouts are decided in one Redis step, so they cannot be raced: 150 wrong keys at
once (over two replicas) never get more answered than the limit, a right key whose
lookup ends after the block is set is refused, a block one replica sets applies on
another at once, a panel's own concurrent calls are never counted, and the
operator's lockout is kept apart from API clients' lockout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.admin.guard import LOGIN_COOKIE
from gateway.clock import ManualClock
from gateway.edge.auth import authenticate
from gateway.errors import AuthError, TooManyRequests
from gateway.state.admin import MAX_FAILURES
from gateway.state.clients import ClientRecord, Directory
from gateway.state.connect import AnyRedis, connect
from gateway.state.limits import AUTH_FAILURES, RateLimiter
from inprocess import ALICE, App, State
from peer_client import send_from

ADMIN = "admin-key-0123456789abcdef"
with_admin = pytest.mark.gateway(admin_key=ADMIN)
ATTACKER = "198.51.100.66"
RACERS = 150


def admin_call(key: str) -> httpx.Request:
    return httpx.Request("GET", "http://gateway/admin/api/overview",
                         headers={"Authorization": f"Bearer {key}"})


def login(key: str) -> httpx.Request:
    # the login form's CSRF token is a double submit: any token, in the cookie and the form
    return httpx.Request("POST", "http://gateway/admin/login", data={"csrf": "t", "key": key},
                         headers={"cookie": f"{LOGIN_COOKIE}=t"})


def api_call(key: str) -> httpx.Request:
    return httpx.Request("POST", "http://gateway/api/v2", data={"key": key, "action": "balance"})


def codes(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


@with_admin
async def test_racing_wrong_admin_keys_get_no_more_answers_than_the_limit(app: App) -> None:
    answered = codes(send_from(app, ATTACKER, *(admin_call(f"wrong-admin-key-{i:04}")
                                               for i in range(RACERS))))
    assert answered.count(401) == MAX_FAILURES
    assert answered.count(429) == RACERS - MAX_FAILURES
    # from then on the right key is refused too: guessing learns nothing
    assert codes(send_from(app, ATTACKER, admin_call(ADMIN), login(ADMIN))) == [429, 429]


@with_admin
async def test_racing_wrong_logins_get_no_more_answers_than_the_limit(app: App) -> None:
    answered = send_from(app, ATTACKER, *(login(f"wrong-{i}") for i in range(RACERS)))
    wrong = [r for r in answered if r.status_code == 401]
    assert len(wrong) == MAX_FAILURES and all("Wrong admin key" in r.text for r in wrong)
    refused = [r for r in answered if r.status_code == 429]
    assert len(refused) == RACERS - MAX_FAILURES
    assert all("Too many failed attempts" in r.json()["error"] for r in refused)
    assert codes(send_from(app, ATTACKER, login(ADMIN))) == [429]


async def test_racing_wrong_api_keys_get_no_more_answers_than_the_limit(app: App) -> None:
    answered = codes(send_from(app, ATTACKER, *(api_call(f"guess-{i}") for i in range(RACERS))))
    assert answered.count(401) == AUTH_FAILURES
    assert answered.count(429) == RACERS - AUTH_FAILURES
    assert codes(send_from(app, ATTACKER, api_call(ALICE))) == [429]


async def test_a_block_set_by_another_replica_refuses_a_right_key_at_once(
        app: App, state: State) -> None:
    # this replica has just served the address: it was not blocked a moment ago
    assert codes(send_from(app, ATTACKER, api_call(ALICE))) == [200]
    # another replica (`state`: resources of its own over the same Redis) blocks it
    for _ in range(AUTH_FAILURES):
        await state.r.limiter.failed_auth(ATTACKER)
    with pytest.raises(TooManyRequests):
        await state.r.limiter.failed_auth(ATTACKER)
    # no time passes (the clock is frozen): the block applies here all the same
    assert codes(send_from(app, ATTACKER, api_call(ALICE))) == [429]


class Gated(Directory):
    """The real directory, whose lookups wait for `go` (the test decides when a
    key's comparison ends)."""

    def __init__(self, redis: AnyRedis, clock: ManualClock) -> None:
        super().__init__(redis, clock)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def identify(self, key: str | None) -> ClientRecord | None:
        self.entered.set()
        await self.go.wait()
        return await super().identify(key)


@pytest.fixture
async def replica(redis_url: str, clock: ManualClock) -> AsyncIterator[RateLimiter]:
    """The failed-authentication limits of a second replica, over its own connection."""
    redis = connect(redis_url)
    try:
        yield RateLimiter(redis, clock)
    finally:
        await redis.aclose()


async def test_a_right_key_compared_after_the_block_is_refused(
        state: State, replica: RateLimiter) -> None:
    r = state.r
    gated = Gated(r.redis, state.clock)
    slow = asyncio.create_task(authenticate(r.limiter, gated, ATTACKER, ALICE))
    await gated.entered.wait()  # the right key came in while the address was clear
    # 150 wrong keys race over two replicas while its lookup runs
    outcomes = await asyncio.gather(
        *(authenticate(replica if i % 2 else r.limiter, r.directory, ATTACKER, f"guess-{i}")
          for i in range(RACERS)), return_exceptions=True)
    assert sum(isinstance(o, AuthError) for o in outcomes) == AUTH_FAILURES
    assert sum(isinstance(o, TooManyRequests) for o in outcomes) == RACERS - AUTH_FAILURES
    gated.go.set()  # its comparison ends after the block: refused, right as it is
    with pytest.raises(TooManyRequests):
        await slow
    for limiter in (r.limiter, replica):
        with pytest.raises(TooManyRequests):
            await authenticate(limiter, r.directory, ATTACKER, ALICE)


async def test_a_panels_own_concurrent_calls_are_never_counted(
        state: State, replica: RateLimiter) -> None:
    r = state.r
    keys = [f"guess-{i}" if i % 5 == 0 else ALICE for i in range(5 * AUTH_FAILURES)]
    outcomes = await asyncio.gather(
        *(authenticate(replica if i % 2 else r.limiter, r.directory, ATTACKER, key)
          for i, key in enumerate(keys)), return_exceptions=True)
    assert sum(isinstance(o, AuthError) for o in outcomes) == AUTH_FAILURES
    assert sum(isinstance(o, ClientRecord) for o in outcomes) == 4 * AUTH_FAILURES
    # 20 failures and 80 right keys: the address is not blocked
    assert (await authenticate(r.limiter, r.directory, ATTACKER, ALICE)).name == "alice"


@with_admin
async def test_the_operators_lockout_is_apart_from_api_clients(app: App) -> None:
    shared = "198.51.100.77"  # a NAT: an API client guessing, the operator behind it
    answered = codes(send_from(app, shared, *(api_call(f"guess-{i}")
                                              for i in range(AUTH_FAILURES + 1))))
    assert answered.count(429) == 1 and codes(send_from(app, shared, api_call(ALICE))) == [429]
    # the operator still gets in, with the API key and with the login form
    assert codes(send_from(app, shared, admin_call(ADMIN), login(ADMIN))) == [200, 303]
    # and an address locked out of the dashboard still serves its API clients
    other = "198.51.100.78"
    answered = codes(send_from(app, other, *(admin_call(f"wrong-admin-key-{i:04}")
                                             for i in range(MAX_FAILURES + 1))))
    assert answered.count(429) == 1
    assert codes(send_from(app, other, admin_call(ADMIN))) == [429]
    assert codes(send_from(app, other, api_call(ALICE))) == [200]
