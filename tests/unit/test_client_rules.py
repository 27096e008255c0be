"""Per-client routing rules (`clients[].providers`, `clients[].max_rate`): checked in
the config, stored with the client's record (every replica applies them, `keys
rotate` keeps them), and applied by the one candidate decision `add` makes."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any, Literal

import msgspec
import pytest
import yaml
from test_add import stored_orders
from test_link_guard import gateway, settings
from test_router import cand, needs

from gateway.clock import ManualClock
from gateway.config import ClientSettings, ProviderRules, check_text
from gateway.digest import sha256_hex
from gateway.routing import decide
from gateway.routing.plan import ClientRules, plan, usable
from gateway.state.clients import Directory, config_digest
from inprocess import ALICE, BOB, config_text
from upstream import FakeProvider, Reject

pytestmark = pytest.mark.anyio

UNAVAILABLE = {"error": "Service is temporarily unavailable, try again later"}


# --- config --------------------------------------------------------------------


def problems(**alice: Any) -> list[str]:
    config = yaml.safe_load(config_text())
    config["clients"][0].update(alice)
    return check_text(yaml.safe_dump(config, sort_keys=False), "gw.yaml", env={})[1]


def test_rules_parse() -> None:
    s = settings(clients={"alice": {"providers": {"allow": ["prov-b"]}, "max_rate": "0.9"},
                          "bob": {"providers": {"deny": ["prov-a"]}}})
    alice, bob = s.clients
    assert alice.providers is not None and alice.providers.allow == ["prov-b"]
    assert alice.max_rate == Decimal("0.9")
    assert bob.providers is not None and bob.providers.deny == ["prov-a"]
    assert bob.max_rate is None


@pytest.mark.parametrize(("alice", "message"), [
    ({"providers": {"allow": ["prov-x"]}}, "unknown provider 'prov-x'"),
    ({"providers": {"deny": ["prov-a", "nope"]}}, "unknown provider 'nope'"),
    ({"providers": {"allow": ["prov-a"], "deny": ["prov-b"]}}, "either `allow` or `deny`"),
    ({"providers": {}}, "either `allow` or `deny`"),
    ({"providers": {"allow": []}}, "allow names no provider"),
    ({"providers": {"alow": ["prov-a"]}}, "alow"),
    ({"max_rate": "0"}, "max_rate must be > 0"),
    ({"max_rate": "-1.5"}, "max_rate must be > 0"),
])
def test_bad_rules_are_config_errors_with_their_line(alice: dict[str, Any],
                                                      message: str) -> None:
    found = problems(**alice)
    assert len(found) == 1 and message in found[0], found
    assert found[0].startswith("gw.yaml:")


def test_service_link_fields_are_checked() -> None:
    config = yaml.safe_load(config_text(link_guard=True, link_guard_ttl_s=0))
    config["services"][0].update(link_guard=True, link_family=" ")
    found = check_text(yaml.safe_dump(config, sort_keys=False), "gw.yaml", env={})[1]
    assert any("link_guard_ttl_s must be > 0" in p for p in found), found
    assert any("link_family is empty" in p for p in found), found


# --- stored with the client ---------------------------------------------------------


SHOP = ClientSettings(name="shop", key="shop-key", providers=ProviderRules(allow=["prov-b"]),
                      max_rate=Decimal("0.7"))


async def test_rules_live_with_the_client_record_and_survive_rotate(
        directory: Directory) -> None:
    await directory.import_config([SHOP])
    record = await directory.get("shop")
    assert record is not None
    assert (record.allow_providers, record.deny_providers, record.max_rate) == (
        ["prov-b"], [], Decimal("0.7"))
    await directory.rotate("shop")
    await Directory(directory._redis).import_config([SHOP])  # a restart, same config
    rotated = await directory.get("shop")
    assert rotated is not None and rotated.key_digest != record.key_digest, \
        "the rotated key stands"
    assert (rotated.allow_providers, rotated.max_rate) == (["prov-b"], Decimal("0.7"))
    changed = msgspec.structs.replace(SHOP, max_rate=None, providers=None)
    await Directory(directory._redis).import_config([changed])
    cleared = await directory.get("shop")
    assert cleared is not None
    assert (cleared.allow_providers, cleared.max_rate) == (None, None)


class _EntryBeforeRules(msgspec.Struct, kw_only=True):
    """A client's config entry as it was before routing rules existed."""

    name: str
    key: str
    mode: Literal["operator", "ledger"] = "operator"
    markup: Decimal | None = None
    prices: dict[int, Decimal] = {}
    services: list[int] | None = None
    rate_limit: float | None = None
    burst: int | None = None
    dup_window_s: float = 0.0
    error_status: Literal["standard", "always-200"] | None = None


@pytest.mark.parametrize("entry", [
    {"name": "a", "key": "k"},
    {"name": "b", "key": "k2", "mode": "ledger", "markup": "1.20", "prices": {1: "0.5"},
     "services": [1, 2], "rate_limit": 2.5, "burst": 3, "dup_window_s": 60,
     "error_status": "always-200"},
])
def test_entries_without_rules_keep_their_digest(entry: dict[str, Any]) -> None:
    """An upgrade does not re-import them (which would undo a `keys rotate`)."""
    before = msgspec.convert(entry, _EntryBeforeRules, strict=False)
    now = msgspec.convert(entry, ClientSettings, strict=False)
    assert config_digest(now) == sha256_hex(msgspec.json.encode(before))


# --- routing ------------------------------------------------------------------------


def test_plan_skips_what_the_client_rules_exclude() -> None:
    a, b, c = cand("prov-a", "0.5"), cand("prov-b", "0.8"), cand("prov-c", "1.2")

    def reasons(rules: ClientRules) -> list[str | None]:
        return [ch.reason for ch in plan([a, b, c], replace(needs(), client=rules))]

    assert reasons(ClientRules()) == [None, None, None]
    denied = "client rules: provider not allowed for this client"
    assert reasons(ClientRules(allow=frozenset({"prov-b"}))) == [denied, None, denied]
    assert reasons(ClientRules(deny=frozenset({"prov-a"}))) == [denied, None, None]
    over = "client rules: over the client's max rate (0.80000)"
    assert reasons(ClientRules(max_rate=Decimal("0.8"))) == [None, None, over]
    cheap_only = replace(needs(), client=ClientRules(max_rate=Decimal("0.4")))
    assert usable(plan([a, b, c], cheap_only)) == []


async def test_allow_sends_the_order_to_an_allowed_provider_only(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: Any) -> None:
    s = settings(clients={"alice": {"providers": {"allow": ["prov-b"]}}})
    async with gateway(s, redis_url, providers, clock) as app:
        answer = await app.call(action="add", service=1, link="https://t/x", quantity=100)
        order = answer["order"]
        assert stored_orders(sync_redis)[order].provider == "prov-b", "not the cheapest"
        bob = await app.call(BOB, action="add", service=1, link="https://t/y", quantity=100)
        assert "order" not in bob  # bob (no rules, no funds) is not affected by alice's
        app.providers["prov-b"].fail("add", Reject("Not enough funds"))
        assert await app.call(action="add", service=1, link="https://t/z",
                              quantity=100) == UNAVAILABLE, "no fallback to prov-a"
        assert app.providers["prov-a"].calls["add"] == 0


async def test_deny_skips_a_provider(redis_url: str, providers: dict[str, FakeProvider],
                                     clock: ManualClock, sync_redis: Any) -> None:
    s = settings(clients={"alice": {"providers": {"deny": ["prov-a"]}}})
    async with gateway(s, redis_url, providers, clock) as app:
        order = (await app.call(action="add", service=2, link="https://t/x",
                                quantity=100))["order"]
        assert stored_orders(sync_redis)[order].provider == "prov-b"
        assert app.providers["prov-a"].calls["add"] == 0


async def test_max_rate_caps_what_the_gateway_pays(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        sync_redis: Any) -> None:
    # service 1: prov-a 0.50, prov-b 0.80 per 1000
    s = settings(clients={"alice": {"max_rate": "0.6"}, "bob": {"max_rate": "0.4"}})
    async with gateway(s, redis_url, providers, clock) as app:
        order = (await app.call(action="add", service=1, link="https://t/x",
                                quantity=100))["order"]
        assert stored_orders(sync_redis)[order].provider == "prov-a"
        app.providers["prov-a"].fail("add", Reject("Not enough funds"))
        assert await app.call(action="add", service=1, link="https://t/y",
                              quantity=100) == UNAVAILABLE, "prov-b costs more than 0.6"
        assert app.providers["prov-b"].calls["add"] == 0
        app.in_app(app.resources.ledger.credit, "bob", Decimal("10"), "topup")
        before = await app.call(BOB, action="balance")
        assert await app.call(BOB, action="add", service=1, link="https://t/z",
                              quantity=100) == UNAVAILABLE, "nothing under 0.4"
        assert await app.call(BOB, action="balance") == before, "nothing charged"
        assert app.providers["prov-a"].calls["add"] == 2  # the order and the refusal


async def test_the_decision_names_the_client_rule(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    s = settings(clients={"alice": {"providers": {"deny": ["prov-a"]}, "max_rate": "0.7"}})
    async with gateway(s, redis_url, providers, clock) as app:
        r = app.resources
        alice = app.in_app(r.directory.identify, ALICE)
        view = r.catalog.views[1]
        reasons = {c.candidate.provider: c.reason
                   for c in decide.choices(view, 100, None, r.balances, alice)}
        assert reasons == {"prov-a": "client rules: provider not allowed for this client",
                           "prov-b": "client rules: over the client's max rate (0.70000)"}
        assert all(c.reason is None for c in decide.choices(view, 100, None, r.balances))
