"""Alerts: raised by the code that sees them, claimed once in a real Redis, POSTed
to webhooks with retries, never carrying a key, never blocking the request path.

Webhooks are `httpx.MockTransport` receivers; backoff waits go to a recorder
instead of sleeping, and time is a ManualClock.
"""

from __future__ import annotations

import json
import os
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.actions import Actions
from gateway.alerts import Alerter, Webhooks
from gateway.clock import ManualClock
from gateway.config import AlertSettings, parse_settings
from gateway.edge.answers import Outage
from gateway.errors import ClientError, ConfigError, StoreUnavailable
from gateway.events import Alert
from gateway.state.alerts import AlertLog
from gateway.state.connect import connect
from gateway.state.embedded import free_port
from gateway.wiring import open_resources
from inprocess import ALICE, BOB, State, config_text, make_settings, upstream_key
from upstream import FakeProvider, HttpStatus, Reject, transport_for

pytestmark = pytest.mark.anyio

SECRETS = [upstream_key("prov-a"), upstream_key("prov-b"), ALICE, BOB]
FIELDS = {"text", "kind", "severity", "subject", "message", "details", "at", "gateway"}


class Receiver:
    """A webhook: answers the programmed outcomes in turn (an HTTP status, or "drop"
    for a connection that fails), then 200; keeps every body it accepted."""

    def __init__(self, *outcomes: int | str) -> None:
        self.outcomes: deque[int | str] = deque(outcomes)
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.content_types: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.outcomes:
            outcome = self.outcomes.popleft()
            if outcome == "drop":
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(outcome, int)
            return httpx.Response(outcome, text="nope")
        self.raw.append(request.content)
        self.bodies.append(json.loads(request.content))
        self.content_types.append(request.headers["content-type"])
        return httpx.Response(200, text="ok")

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def kinds(self) -> list[str]:
        return [b["kind"] for b in self.bodies]


class Waits:
    """Tenacity's sleep: records the backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@asynccontextmanager
async def alerter(redis_url: str, receiver: Receiver, *, attempts: int = 5,
                  waits: Waits | None = None, clock: ManualClock | None = None,
                  ) -> AsyncIterator[tuple[Alerter, AlertLog]]:
    redis = connect(redis_url)
    log = AlertLog(redis)
    hooks = Webhooks(["https://hooks.example/T000/B000/secret-path"], 5.0, attempts,
                     transport=receiver.transport, sleep=waits or Waits())
    a = Alerter(log, hooks, SECRETS, clock or ManualClock())
    a.start()
    try:
        yield a, log
    finally:
        await a.aclose()
        await redis.aclose()


def breaker_open(at: int = 1) -> Alert:
    return Alert(kind="breaker_open", subject="prov-a", once=f"breaker_open:prov-a:{at}",
                 message="prov-a: circuit breaker opened", details={"provider": "prov-a"})


# --- once across replicas ----------------------------------------------------------


async def test_two_replicas_over_one_redis_send_an_alert_once(redis_url: str) -> None:
    receiver = Receiver()
    async with alerter(redis_url, receiver) as (one, log), alerter(redis_url, receiver) as (two, _):
        one.emit(breaker_open())
        two.emit(breaker_open())
        await one.drain()
        await two.drain()
        assert receiver.kinds() == ["breaker_open"]
        assert [a.kind for a in await log.recent(10)] == ["breaker_open"]
        two.emit(breaker_open(at=2))  # another opening is another alert
        await two.drain()
        assert receiver.kinds() == ["breaker_open", "breaker_open"]
        assert len(await log.recent(10)) == 2
        assert len(await log.recent(1)) == 1


async def test_a_lasting_condition_alerts_again_only_after_it_settled(redis_url: str) -> None:
    low = Alert(kind="balance_low", subject="prov-b", once="balance_low:prov-b",
                repeat_s=3600, message="prov-b: balance 20 USD is below 50 USD")
    receiver = Receiver()
    async with alerter(redis_url, receiver) as (one, _), alerter(redis_url, receiver) as (two, _):
        for a in (one, two, one):
            a.emit(low)
            await a.drain()
        assert receiver.kinds() == ["balance_low"]
        two.settle("balance_low:prov-b")  # topped up
        await two.drain()
        one.emit(low)  # low again: at once, not after repeat_s
        await one.drain()
        assert receiver.kinds() == ["balance_low", "balance_low"]


# --- delivery ----------------------------------------------------------------------


async def test_a_failed_post_is_retried_with_backoff_until_it_succeeds(redis_url: str) -> None:
    receiver, waits = Receiver(500, "drop", 429), Waits()
    async with alerter(redis_url, receiver, waits=waits) as (a, _):
        a.emit(breaker_open())
        await a.drain()
    assert receiver.calls == 4
    assert waits.seconds == [1.0, 2.0, 4.0]  # exponential
    assert receiver.kinds() == ["breaker_open"]


async def test_delivery_gives_up_after_its_attempts(redis_url: str) -> None:
    receiver, waits = Receiver(*[503] * 10), Waits()
    async with alerter(redis_url, receiver, attempts=3, waits=waits) as (a, log):
        a.emit(breaker_open())
        await a.drain()
        assert [x.kind for x in await log.recent(5)] == ["breaker_open"]  # still listed
    assert receiver.calls == 3 and waits.seconds == [1.0, 2.0]
    assert receiver.bodies == []


async def test_a_webhook_that_refuses_the_alert_is_not_asked_again(redis_url: str) -> None:
    receiver, waits = Receiver(404), Waits()
    async with alerter(redis_url, receiver, waits=waits) as (a, _):
        a.emit(breaker_open())
        await a.drain()
    assert receiver.calls == 1 and waits.seconds == []


async def test_emit_never_waits_for_the_webhook(redis_url: str) -> None:
    """A webhook that never answers holds up neither the caller nor the next alert."""
    import asyncio

    stuck = asyncio.Event()
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["subject"])
        if len(seen) == 1:
            await stuck.wait()
        return httpx.Response(200)

    redis = connect(redis_url)
    hooks = Webhooks(["http://hook.example/x"], 5.0, 1, transport=httpx.MockTransport(handler))
    a = Alerter(AlertLog(redis), hooks, clock=ManualClock(), queue_size=2)
    a.start()
    try:
        a.emit(breaker_open(1))
        for _ in range(50):
            await asyncio.sleep(0)
        a.emit(Alert(kind="breaker_closed", subject="second", message="m", once="x:2"))
        async with asyncio.timeout(5):
            while len(seen) < 2:
                await asyncio.sleep(0)
        for i in range(10):  # a full queue drops, it does not block
            a.emit(breaker_open(100 + i))
        assert a.dropped >= 1
        stuck.set()
    finally:
        await a.aclose()
        await redis.aclose()


# --- the payload -------------------------------------------------------------------


async def test_the_payload_has_a_one_line_text_and_the_structured_fields(
        redis_url: str) -> None:
    receiver, clock = Receiver(), ManualClock(1_800_000_000)
    async with alerter(redis_url, receiver, clock=clock) as (a, log):
        a.emit(Alert(kind="order_unknown", subject="1042", once="order_unknown:1042",
                     message="order 1042: prov-a may or may not\nhave taken it",
                     details={"order": 1042, "charge": "0.05000", "provider": "prov-a"}))
        await a.drain()
        [listed] = await log.recent(10)
    [body] = receiver.bodies
    assert set(body) == FIELDS
    assert body["text"] == "[smm-gateway critical] order 1042: prov-a may or may not have taken it"
    assert (body["kind"], body["severity"], body["subject"]) == ("order_unknown", "critical",
                                                                 "1042")
    assert body["details"] == {"order": 1042, "charge": "0.05000", "provider": "prov-a"}
    assert body["at"] == datetime.fromtimestamp(1_800_000_000, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert body["gateway"] == f"{socket.gethostname()}:{os.getpid()}"
    assert receiver.content_types == ["application/json"]
    assert msgspec.to_builtins(listed) == body  # the dashboard lists what was sent


async def test_a_key_in_an_alert_is_scrubbed(redis_url: str) -> None:
    receiver = Receiver()
    leaky = f"prov-a said: invalid key {upstream_key('prov-a')} (client {ALICE})"
    async with alerter(redis_url, receiver) as (a, log):
        a.emit(Alert(kind="order_unknown", subject="7", message=leaky,
                     details={"error": leaky}))
        await a.drain()
        stored = msgspec.json.encode(await log.recent(10))
    assert receiver.bodies[0]["message"] == "prov-a said: invalid key *** (client ***)"
    for secret in SECRETS:
        assert secret.encode() not in receiver.raw[0] and secret.encode() not in stored


# --- raised by the gateway's own code ------------------------------------------------


@asynccontextmanager
async def gateway(redis_url: str, receiver: Receiver, tmp_path: Path,
                  providers: dict[str, FakeProvider],
                  clock: ManualClock) -> AsyncIterator[State]:
    settings = msgspec.structs.replace(make_settings(), alerts=AlertSettings(
        webhooks=["https://hooks.example/services/T0/B0/XXXX"],
        balance_below={"prov-b": Decimal("50")}))
    async with open_resources(settings, redis_url, transport=transport_for(providers),
                              clock=clock, journal_dir=tmp_path / "journal",
                              webhook_transport=receiver.transport) as r:
        actions = Actions(r)
        try:
            yield State(r, actions, clock, providers)
        finally:
            await actions.aclose()


async def drained(s: State) -> None:
    assert isinstance(s.r.events, Alerter)
    await s.r.breakers.flush()
    await s.r.events.drain()


async def test_the_gateway_raises_each_alert_once_and_never_with_a_key(
        redis_url: str, tmp_path: Path, providers: dict[str, FakeProvider],
        clock: ManualClock) -> None:
    receiver = Receiver()
    a = providers["prov-a"]
    async with gateway(redis_url, receiver, tmp_path, providers, clock) as s:
        # an ambiguous add: the order is unknown
        a.fail("add", HttpStatus(500))
        with pytest.raises(ClientError):
            await s.add(service=1, link="https://t.co/x", quantity=100)
        # prov-b's balance (20) is under its threshold (50); prov-a has none
        await s.r.balances.refresh("prov-b")
        await s.r.balances.refresh("prov-a")
        # prov-a fails until its breaker opens, then a probe closes it
        a.fail_always("add", Reject("API is under maintenance"))
        for _ in range(3):
            await s.add(service=1, link="https://t.co/x", quantity=100)
        a.fail_always("add", None)
        clock.advance(30)
        await s.add(service=1, link="https://t.co/x", quantity=100)
        await drained(s)
        assert sorted(receiver.kinds()) == ["balance_low", "breaker_closed", "breaker_open",
                                            "order_unknown"]
        # lasting: the next refresh says nothing new
        await s.r.balances.refresh("prov-b")
        # the catalog: a service vanishes from prov-a, another's cheapest rate jumps
        a.services = [dict(x, rate="5.00") if x["service"] == 1 else x
                      for x in a.services if x["service"] != 3]
        clock.advance(86400 * 1.2)
        await s.r.catalog.sync()
        await drained(s)
    kinds = receiver.kinds()
    assert sorted(kinds) == ["balance_low", "breaker_closed", "breaker_open", "order_unknown",
                             "rate_held", "service_vanished"]
    by_kind = {b["kind"]: b for b in receiver.bodies}
    assert by_kind["balance_low"]["details"] == {
        "provider": "prov-b", "balance": "20", "threshold": "50", "currency": "USD"}
    assert by_kind["order_unknown"]["details"]["order"] == 1000
    assert by_kind["breaker_open"]["subject"] == "prov-a"
    assert by_kind["service_vanished"]["subject"] == "prov-a:3"
    assert by_kind["rate_held"]["details"]["service"] == 1
    for raw in receiver.raw:
        for secret in SECRETS:
            assert secret.encode() not in raw


async def test_operator_commands_raise_no_alerts(redis_url: str, tmp_path: Path,
                                                 providers: dict[str, FakeProvider],
                                                 clock: ManualClock) -> None:
    receiver = Receiver()
    settings = msgspec.structs.replace(make_settings(), alerts=AlertSettings(
        webhooks=["https://hooks.example/x"], balance_below={"prov-b": Decimal("50")}))
    async with open_resources(settings, redis_url, serving=False,
                              transport=transport_for(providers), clock=clock,
                              webhook_transport=receiver.transport) as r:
        await r.balances.refresh("prov-b")
        assert not isinstance(r.events, Alerter)
    assert receiver.calls == 0


# --- Redis itself --------------------------------------------------------------------


async def test_alerts_about_redis_go_out_without_it(redis_url: str) -> None:
    receiver = Receiver()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with alerter(dead, receiver) as (a, _):
        a.emit(Alert(kind="redis_down", subject="redis", message="Redis is unreachable",
                     local=True))
        a.emit(breaker_open())  # needs its claim: not sent, and the sender lives on
        await a.drain()
        a.emit(Alert(kind="redis_up", subject="redis", message="back", local=True))
        await a.drain()
    assert receiver.kinds() == ["redis_down", "redis_up"]


async def test_a_redis_outage_alerts_once_when_it_starts_and_once_when_it_ends(
        redis_url: str) -> None:
    receiver = Receiver()
    async with alerter(redis_url, receiver) as (a, log):
        outage = Outage(events=a)
        for _ in range(3):
            outage.failed(StoreUnavailable("redis: ConnectionError"))
        redis = connect(redis_url)
        try:
            await outage.succeeded(redis)
            await outage.succeeded(redis)
        finally:
            await redis.aclose()
        await a.drain()
        assert receiver.kinds() == ["redis_down", "redis_up"]
        assert receiver.bodies[1]["details"]["refused_requests"] == 3
        assert [x.kind for x in await log.recent(10)] == ["redis_up", "redis_down"]


# --- config --------------------------------------------------------------------------


def _with_alerts(block: str) -> str:
    return config_text() + "alerts:\n" + block


def test_an_alerts_section_loads_with_env_urls_and_decimal_thresholds() -> None:
    s = parse_settings(_with_alerts(
        "  webhooks: [\"${HOOK}\", http://127.0.0.1:9000/hook]\n"
        "  balance_below: {prov-a: 12.50, prov-b: 0}\n"
        "  repeat_s: 600\n"), env={"HOOK": "https://hooks.slack.com/services/T/B/S"})
    assert s.alerts.webhooks == ["https://hooks.slack.com/services/T/B/S",
                                 "http://127.0.0.1:9000/hook"]
    assert s.alerts.balance_below == {"prov-a": Decimal("12.50"), "prov-b": Decimal("0")}
    assert s.alerts.repeat_s == 600
    assert parse_settings(config_text(), env={}).alerts == AlertSettings()


@pytest.mark.parametrize(("block", "words"), [
    ("  webhooks: [ftp://hooks.example/x]\n", "http:// or https://"),
    ("  webhooks: [hooks.example/x]\n", "http:// or https://"),
    ("  webhooks: [\"https://\"]\n", "with a host"),
    ("  balance_below: {prov-z: 5}\n", "unknown provider 'prov-z'"),
    ("  balance_below: {prov-a: -1}\n", "must be >= 0"),
    ("  balance_below: {prov-a: lots}\n", "Invalid decimal string"),
    ("  repeat_s: 0\n", "repeat_s must be > 0"),
    ("  attempts: 0\n", "attempts must be >= 1"),
    ("  webhook: [https://hooks.example/x]\n", "did you mean `webhooks`?"),
])
def test_a_bad_alerts_section_is_an_error_naming_its_line(block: str, words: str) -> None:
    text = _with_alerts(block)
    line = text.splitlines().index(block.rstrip("\n")) + 1
    with pytest.raises(ConfigError) as err:
        parse_settings(text, "p.yaml", env={})
    assert f"p.yaml:{line}: " in str(err.value)
    assert words in str(err.value)


def test_a_webhook_url_is_never_echoed_in_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(_with_alerts("  webhooks: [\"ftp://h/T0/very-secret\"]\n"), env={})
    assert "very-secret" not in str(err.value)
