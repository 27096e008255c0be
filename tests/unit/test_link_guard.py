"""One active order per link (`link_guard`): a second `add` on a link whose order is
still active is refused before anything is reserved or sent; the link is free again
once its order is final, failed, or never recorded. In-process app, real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from test_add import stored_orders

from gateway.actions import Actions
from gateway.clock import ManualClock
from gateway.config import Settings, parse_settings
from gateway.errors import ClientError
from gateway.state import keys
from gateway.state.links import LINK_GRACE_S, link_digest, normalise_link
from gateway.wire import OrderAnswer
from gateway.wiring import open_resources
from inprocess import ALICE, BOB, App, State, config_text, serve
from upstream import FakeProvider, HttpStatus, Reject, transport_for

pytestmark = pytest.mark.anyio

ACTIVE = "You have active order with this link. Please wait until order being completed."
LINK = "https://tiktok.com/@me"


def settings(services: dict[int, dict[str, Any]] | None = None,
             clients: dict[str, dict[str, Any]] | None = None, **gateway: Any) -> Settings:
    """The unit tier's config with per-service and per-client fields added."""
    config = yaml.safe_load(config_text(**gateway))
    for svc in config["services"]:
        svc.update((services or {}).get(svc["id"], {}))
    for client in config["clients"]:
        client.update((clients or {}).get(client["name"], {}))
    return parse_settings(yaml.safe_dump(config, sort_keys=False), env={})


@asynccontextmanager
async def gateway(s: Settings, redis_url: str, providers: dict[str, FakeProvider],
                  clock: ManualClock) -> AsyncIterator[App]:
    async with serve(s, redis_url, providers, clock) as app:
        yield app


async def add(app: App, link: str = LINK, service: int = 1, key: str = ALICE,
              quantity: int = 100, **extra: Any) -> Any:
    return await app.call(key, action="add", service=service, link=link, quantity=quantity,
                          **extra)


def upstream_adds(app: App) -> int:
    return sum(p.calls["add"] for p in app.providers.values())


async def test_off_by_default_two_orders_on_one_link_both_go_out(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(), redis_url, providers, clock) as app:
        assert await add(app) == {"order": 1000}
        assert await add(app) == {"order": 1001}
        assert upstream_adds(app) == 2


async def test_a_second_order_on_an_active_link_is_refused_before_upstream_and_money(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: redis.Redis) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        app.in_app(app.resources.ledger.credit, "bob", Decimal("10"), "topup")
        assert await add(app, key=BOB) == {"order": 1000}
        balance = await app.call(BOB, action="balance")
        response = await app.post(BOB, action="add", service=1, link=LINK, quantity=100)
        assert response.status_code == 400
        assert response.json() == {"error": ACTIVE}
        assert upstream_adds(app) == 1, "nothing was sent upstream"
        assert await app.call(BOB, action="balance") == balance, "nothing was charged"
        assert list(stored_orders(sync_redis)) == [1000], "no order record for the refusal"
        # another client is refused too: the provider would see two orders on one link
        assert await add(app, key=ALICE) == {"error": ACTIVE}
        assert upstream_adds(app) == 1


async def test_always_200_clients_get_the_refusal_with_200(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    s = settings(clients={"alice": {"error_status": "always-200"}}, link_guard=True)
    async with gateway(s, redis_url, providers, clock) as app:
        await add(app)
        response = await app.post(action="add", service=1, link=LINK, quantity=100)
        assert (response.status_code, response.json()) == (200, {"error": ACTIVE})


@pytest.mark.parametrize("variant", [
    "https://tiktok.com/@me/", "http://tiktok.com/@me", "  HTTPS://WWW.TikTok.com/@me  ",
    "tiktok.com/@me", "www.tiktok.com/@me/", "https://tiktok.com:443/@me#top",
    "https://tiktok.com/@me?utm_source=ig",
])
async def test_the_same_link_written_differently_is_the_same_link(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        variant: str) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        assert await add(app) == {"order": 1000}
        assert await add(app, link=variant) == {"error": ACTIVE}


@pytest.mark.parametrize("other", [
    "https://tiktok.com/@Me", "https://tiktok.com/@me/video/1", "https://tiktok.com/@me2",
    "https://vm.tiktok.com/@me", "https://tiktok.com/@me?lang=de",
])
async def test_other_links_are_not_held(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        other: str) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        assert await add(app) == {"order": 1000}
        assert await add(app, link=other) == {"order": 1001}


@pytest.mark.parametrize(("raw", "normal"), [
    ("https://www.TikTok.com/@me/", "tiktok.com/@me"),
    ("http://tiktok.com/@me", "tiktok.com/@me"),
    ("tiktok.com/@me", "tiktok.com/@me"),
    (" instagram.com/p/AbC/?utm_source=x&igsh=1#c ", "instagram.com/p/AbC?igsh=1"),
    ("https://youtube.com/watch?v=dQw4w9WgXcQ", "youtube.com/watch?v=dQw4w9WgXcQ"),
    ("https://example.com:8443/x", "example.com:8443/x"),
    ("HTTPS://EXAMPLE.COM", "example.com"),
    ("  @Someone ", "@Someone"),
    ("someone", "someone"),
    ("tg://resolve?domain=Chan", "tg://resolve?domain=Chan"),
])
def test_link_normalisation(raw: str, normal: str) -> None:
    assert normalise_link(raw) == normal


async def test_the_link_is_free_again_once_its_order_is_final(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        holder = (await add(app))["order"]
        prov = app.providers["prov-a"]
        prov.set_status(prov.last_order, "In progress")
        assert (await app.call(action="status", order=holder))["status"] == "In progress"
        assert await add(app) == {"error": ACTIVE}
        for final in ("Completed", "Partial", "Canceled", "Refunded"):
            prov.set_status(prov.last_order, final, remains=10 if final == "Partial" else 0)
            assert (await app.call(action="status", order=holder))["status"] == final
            answer = await add(app)
            assert "order" in answer, final
            holder = answer["order"]
            assert await add(app) == {"error": ACTIVE}
        assert upstream_adds(app) == 5


async def test_an_order_refused_everywhere_gives_its_link_back(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: redis.Redis) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        for p in app.providers.values():
            p.fail("add", Reject("Service disabled"))
        response = await app.post(action="add", service=1, link=LINK, quantity=100)
        assert response.json() == {"error": "Service is temporarily unavailable, try again later"}
        assert stored_orders(sync_redis)[1000].state == "failed"
        assert await add(app) == {"order": 1001}


async def test_an_order_without_funds_gives_its_link_back(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        assert await add(app, key=BOB) == {"error": "Not enough funds on balance"}
        assert await add(app, key=ALICE) == {"order": 1001}


async def test_an_order_whose_outcome_is_unknown_keeps_its_link(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        app.providers["prov-a"].fail("add", HttpStatus(500))
        assert "could not be confirmed" in (await add(app))["error"]
        assert await add(app) == {"error": ACTIVE}
        assert upstream_adds(app) == 1


def _mark(sync_redis: redis.Redis, family: str, value: str) -> None:
    sync_redis.set(keys.link_mark(link_digest(family, LINK)), value)


async def test_a_failed_holder_left_holding_its_link_is_taken_over(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: redis.Redis) -> None:
    """The add that failed could not give its link back (Redis was away): its record
    says `failed`, so the next add takes the link over."""
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        for p in app.providers.values():
            p.fail("add", Reject("Service disabled"))
        await add(app)
        assert stored_orders(sync_redis)[1000].state == "failed"
        _mark(sync_redis, "id:1", f"1000:{int(clock.time() * 1000)}:1:alice")
        assert await add(app) == {"order": 1001}
        assert await add(app) == {"error": ACTIVE}


async def test_a_holder_that_died_before_its_record_holds_only_for_the_grace_period(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: redis.Redis) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        _mark(sync_redis, "id:1", f"999:{int(clock.time() * 1000)}:1:alice")
        assert await add(app) == {"error": ACTIVE}, "in flight: being placed right now"
        clock.advance(LINK_GRACE_S + 1)
        assert await add(app) == {"order": 1001}
        dead = stored_orders(sync_redis)[999]
        assert (dead.state, dead.client) == ("failed", "alice"), \
            "the dead add's id is recorded as failed: it can never send now"


async def test_the_mark_has_a_ttl(redis_url: str, providers: dict[str, FakeProvider],
                                  clock: ManualClock, sync_redis: redis.Redis) -> None:
    async with gateway(settings(link_guard=True, link_guard_ttl_s=3600), redis_url,
                       providers, clock) as app:
        await add(app)
        ttl = sync_redis.pttl(keys.link_mark(link_digest("id:1", LINK)))
        assert 3_590_000 < ttl <= 3_600_000
    assert settings(link_guard=True).gateway.link_guard_ttl_s == 30 * 86400


async def test_families_separate_services_unless_configured_to_share(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        assert await add(app, service=1) == {"order": 1000}
        assert await add(app, service=2) == {"order": 1001}, "another family: allowed"
        assert await add(app, service=2) == {"error": ACTIVE}
    shared = {1: {"link_family": "tiktok"}, 2: {"link_family": "tiktok"}}
    async with gateway(settings(shared, link_guard=True), redis_url, providers, clock) as app:
        assert "order" in await add(app, service=1, link=LINK + "/x")
        assert await add(app, service=2, link=LINK + "/x") == {"error": ACTIVE}


async def test_a_service_setting_overrides_the_gateway_one(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    s = settings({1: {"link_guard": True}})  # gateway-wide off, service 1 on
    async with gateway(s, redis_url, providers, clock) as app:
        assert await add(app, service=1) == {"order": 1000}
        assert await add(app, service=1) == {"error": ACTIVE}
        assert "order" in await add(app, service=2)
        assert "order" in await add(app, service=2)
    s = settings({2: {"link_guard": False}}, link_guard=True)  # on, service 2 off
    async with gateway(s, redis_url, providers, clock) as app:
        assert "order" in await add(app, service=2, link=LINK + "/y")
        assert "order" in await add(app, service=2, link=LINK + "/y")
        assert "order" in await add(app, service=1, link=LINK + "/y")
        assert await add(app, service=1, link=LINK + "/y") == {"error": ACTIVE}


async def test_an_idempotent_retry_answers_the_original_order(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    s = settings(clients={"alice": {"dup_window_s": 60}}, link_guard=True)
    async with gateway(s, redis_url, providers, clock) as app:
        assert await add(app, idempotency_key="k1") == {"order": 1000}
        assert await add(app, idempotency_key="k1") == {"order": 1000}
        assert upstream_adds(app) == 1
        # the duplicate window (same service, link, quantity) answers the first order too
        answer = await add(app, link=LINK + "/dup")
        assert await add(app, link=LINK + "/dup") == answer
        assert upstream_adds(app) == 2
        assert await add(app, link=LINK + "/dup", quantity=200) == {"error": ACTIVE}


async def test_a_refusal_is_not_kept_for_an_idempotency_key(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with gateway(settings(link_guard=True), redis_url, providers, clock) as app:
        first = (await add(app))["order"]
        assert await add(app, idempotency_key="k2") == {"error": ACTIVE}
        prov = app.providers["prov-a"]
        prov.set_status(prov.last_order, "Completed", remains=0)
        await app.call(action="status", order=first)
        again = await add(app, idempotency_key="k2")
        assert "order" in again, "the retry the refusal invited can succeed"
        assert await add(app, idempotency_key="k2") == again


# --- races, in the test's own loop ------------------------------------------------


@asynccontextmanager
async def in_loop(s: Settings, redis_url: str, providers: dict[str, FakeProvider],
                  clock: ManualClock, tmp: Path) -> AsyncIterator[State]:
    async with open_resources(s, redis_url, transport=transport_for(providers), clock=clock,
                              journal_dir=tmp / "journal") as r:
        actions = Actions(r)
        try:
            yield State(r, actions, clock, providers)
        finally:
            await actions.aclose()


async def _outcome(state: State, link: str = LINK) -> str:
    try:
        answer = await state.act("add", service=1, link=link, quantity=100)
    except ClientError as exc:
        return exc.message
    assert isinstance(answer, OrderAnswer)
    return "order"


async def test_an_order_being_placed_holds_its_link(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    async with in_loop(settings(link_guard=True), redis_url, providers, clock,
                       tmp_path) as state:
        hold = providers["prov-a"].hold("add")
        first = asyncio.create_task(_outcome(state))
        await hold.entered.wait()
        try:
            assert await _outcome(state, "https://www.tiktok.com/@me/") == ACTIVE
        finally:
            hold.release.set()
        assert await first == "order"
        assert providers["prov-a"].calls["add"] == 1


async def test_concurrent_orders_on_one_link_exactly_one_goes_out(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    async with in_loop(settings(link_guard=True), redis_url, providers, clock,
                       tmp_path) as state:
        outcomes = await asyncio.gather(*(_outcome(state) for _ in range(8)))
        assert sorted(outcomes, key=len) == ["order"] + [ACTIVE] * 7
        assert providers["prov-a"].calls["add"] + providers["prov-b"].calls["add"] == 1
