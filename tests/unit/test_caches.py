"""Per-process caches on the clock: client keys (CACHE_S) and the operator's
`balance` (balance_cache_s)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.state.clients import CACHE_S
from inprocess import ALICE, BOB, App

pytestmark = pytest.mark.anyio

INVALID_KEY = {"error": "Invalid API key"}


async def test_disabled_key_works_until_the_key_cache_expires(app: App) -> None:
    assert (await app.post(action="services")).status_code == 200
    app.in_app(app.resources.directory.set_active, "alice", False)

    app.clock.advance(CACHE_S / 2)
    assert (await app.post(action="services")).status_code == 200

    app.clock.advance(CACHE_S / 2)
    response = await app.post(action="services")
    assert response.status_code == 401
    assert response.json() == INVALID_KEY


async def test_reenabled_key_works_again_after_the_key_cache_expires(app: App) -> None:
    app.in_app(app.resources.directory.set_active, "alice", False)
    assert (await app.post(action="services")).status_code == 401
    app.in_app(app.resources.directory.set_active, "alice", True)
    assert (await app.post(action="services")).status_code == 401  # the refusal is cached too
    app.clock.advance(CACHE_S)
    assert (await app.post(action="services")).status_code == 200


async def test_rotated_key_old_one_refused_after_the_cache(app: App) -> None:
    assert (await app.post(action="services")).status_code == 200
    new_key = app.in_app(app.resources.directory.rotate, "alice")
    assert (await app.post(new_key, action="services")).status_code == 200
    assert (await app.post(ALICE, action="services")).status_code == 200
    app.clock.advance(CACHE_S)
    assert (await app.post(ALICE, action="services")).json() == INVALID_KEY
    assert (await app.post(new_key, action="services")).status_code == 200


@pytest.mark.gateway(balance_cache_s=30)
async def test_operator_balance_is_served_from_cache_until_the_clock_moves(app: App) -> None:
    a, b = app.providers["prov-a"], app.providers["prov-b"]
    assert await app.call(action="balance") == {"balance": "120.50000", "currency": "USD"}
    assert (a.calls["balance"], b.calls["balance"]) == (1, 1)
    a.balance = "200"

    app.clock.advance(29)
    assert await app.call(action="balance") == {"balance": "120.50000", "currency": "USD"}
    assert (a.calls["balance"], b.calls["balance"]) == (1, 1)

    app.clock.advance(1)
    assert await app.call(action="balance") == {"balance": "220.00000", "currency": "USD"}
    assert (a.calls["balance"], b.calls["balance"]) == (2, 2)


@pytest.mark.gateway(balance_cache_s=0)
async def test_operator_balance_without_cache_asks_every_time(app: App) -> None:
    for _ in range(3):
        await app.call(action="balance")
    assert app.providers["prov-a"].calls["balance"] == 3


async def test_prepaid_client_balance_is_its_own_ledger(app: App) -> None:
    app.in_app(app.resources.ledger.credit, "bob", Decimal("12.5"), "topup")
    assert await app.call(BOB, action="balance") == {"balance": "12.50000",
                                                            "currency": "USD"}
    assert app.providers["prov-a"].calls["balance"] == 0
