"""The config seeds a client once: `keys rotate` / `disable` / `enable` survive every
restart, until the config itself changes that client's entry (then it wins, loudly)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from gateway.config import ClientSettings
from gateway.state.clients import ClientRecord, Directory

pytestmark = pytest.mark.anyio

SHOP = ClientSettings(name="shop", key="shop-key", mode="ledger", markup=Decimal("1.2"))
OWNER = ClientSettings(name="owner", key="owner-key")


async def restart(directory: Directory, *clients: ClientSettings) -> Directory:
    """What a (re)started replica does: a new directory (empty cache), the config imported."""
    fresh = Directory(directory._redis)
    await fresh.import_config(clients)
    return fresh


async def test_a_new_config_client_is_seeded(directory: Directory) -> None:
    d = await restart(directory, SHOP, OWNER)
    shop = await d.identify("shop-key")
    assert shop is not None and shop.mode == "ledger" and shop.markup == Decimal("1.2")
    assert (await d.identify("owner-key")) is not None


async def test_disable_survives_a_restart(directory: Directory) -> None:
    d = await restart(directory, SHOP)
    await d.set_active("shop", False)
    d = await restart(d, SHOP)
    assert await d.identify("shop-key") is None
    record = await d.get("shop")
    assert record is not None and not record.active
    await d.set_active("shop", True)
    d = await restart(d, SHOP)
    assert await d.identify("shop-key") is not None


async def test_a_rotated_key_survives_a_restart(directory: Directory) -> None:
    d = await restart(directory, SHOP)
    new_key = await d.rotate("shop")
    d = await restart(d, SHOP)
    assert await d.identify("shop-key") is None, "the config's old key must stay dead"
    assert (await d.identify(new_key)) is not None


async def test_a_changed_config_entry_wins_and_says_so(
        directory: Directory, caplog: pytest.LogCaptureFixture) -> None:
    d = await restart(directory, SHOP)
    rotated = await d.rotate("shop")
    await d.set_active("shop", False)
    changed = ClientSettings(name="shop", key="shop-key", mode="ledger", markup=Decimal("1.3"))
    with caplog.at_level(logging.INFO, logger="gateway.clients"):
        d = await restart(d, changed)
    shop = await d.identify("shop-key")
    assert shop is not None and shop.markup == Decimal("1.3") and shop.active
    assert await d.identify(rotated) is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.__dict__["client"] == "shop"
    assert len(warning.__dict__["overrides"]) == 2
    # imported once: the next start leaves the record alone again
    caplog.clear()
    await d.set_active("shop", False)
    with caplog.at_level(logging.INFO, logger="gateway.clients"):
        d = await restart(d, changed)
    assert await d.identify("shop-key") is None
    assert not caplog.records


async def test_a_new_key_from_the_environment_is_a_config_change(directory: Directory) -> None:
    d = await restart(directory, SHOP)
    await d.set_active("shop", False)
    d = await restart(d, ClientSettings(name="shop", key="new-env-key", mode="ledger",
                                        markup=Decimal("1.2")))
    assert await d.identify("new-env-key") is not None
    assert await d.identify("shop-key") is None


async def test_clients_outside_the_config_and_balances_are_left_alone(
        directory: Directory) -> None:
    key = await directory.create(ClientRecord(name="reseller", key_digest="", mode="ledger"))
    d = await restart(directory, SHOP)
    assert (await d.identify(key)) is not None
    assert {r.name for r in await d.all()} == {"reseller", "shop"}


async def test_a_record_from_before_seeding_rules_is_taken_over_once(
        directory: Directory) -> None:
    """A record stored by an older version (no config digest) is re-seeded once."""
    await directory.put(ClientRecord(name="shop", key_digest="0" * 64, mode="operator"))
    d = await restart(directory, SHOP)
    record = await d.get("shop")
    assert record is not None and record.mode == "ledger" and record.config_digest
    await d.set_active("shop", False)
    d = await restart(d, SHOP)
    assert await d.identify("shop-key") is None
