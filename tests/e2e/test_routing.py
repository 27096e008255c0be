"""Routing that survives real providers: shared breakers, balance-aware routing, one
catalog refresh across replicas. Real gateway processes, real Redis, simulators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Gateway, Sim, base_config, two_gateways

FAST_BREAKER = {"breaker_min_requests": 3, "breaker_threshold": 0.5,
                "breaker_cooldown_s": 4, "breaker_window_s": 60}


@pytest.fixture
def pair(sims: tuple[Sim, Sim], fresh_redis: str,
         tmp_path: Path) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    with two_gateways(sims, fresh_redis, tmp_path, **FAST_BREAKER) as stack:
        yield stack


def add(gw: Gateway, service: int = 1, quantity: int = 100) -> dict:
    return dict(gw.call(action="add", service=service, link="https://t/x", quantity=quantity))


def trip(gw: Gateway, sim: Sim, order: int) -> None:
    """Three failed status calls to the provider holding `order`."""
    sim.control("fault", {"fault": "500", "rate": 1.0})
    for _ in range(3):
        gw.call(action="status", order=order)
    sim.control("fault", {"fault": None, "rate": 0})


def test_an_open_breaker_is_skipped_by_every_replica(pair):
    one, two, a, b = pair
    order = add(one)["order"]  # prov-b (cheapest)
    trip(one, b, order)
    sent = len(b.requests("add"))
    assert "order" in add(two), "the other replica routes around the open breaker"
    assert len(b.requests("add")) == sent, "prov-b was not even asked"
    assert len(a.orders()) == 1
    assert "breaker open" in one.log()


def test_half_open_probe_closes_on_success_and_reopens_on_failure(pair):
    one, two, a, b = pair
    order = add(one)["order"]
    trip(one, b, order)
    time.sleep(4.1)  # cooldown
    add(two)  # the probe: goes to prov-b and succeeds
    assert len(b.orders()) == 2
    add(one)  # closed again: prov-b is the cheapest
    assert len(b.orders()) == 3 and len(a.orders()) == 0
    trip(one, b, order)
    time.sleep(4.1)
    b.control("fault", {"fault": "drop", "rate": 1.0})
    assert "could not be confirmed" in one.call(
        action="add", service=1, link="https://t/x", quantity=100)["error"]
    b.control("fault", {"fault": None, "rate": 0})
    assert "order" in add(two)  # the failed probe opened it again: prov-a
    assert len(a.orders()) == 1


def test_every_candidate_open_fails_at_once(pair):
    one, two, a, b = pair
    on_a, on_b = add(one, service=2)["order"], add(one, service=1)["order"]
    trip(one, a, on_a)
    trip(one, b, on_b)
    asked = len(a.requests("add")) + len(b.requests("add"))
    started = time.monotonic()
    r = two.post(action="add", service=2, link="l", quantity=100)
    assert time.monotonic() - started < 1.0
    assert r.json() == {"error": "Service is temporarily unavailable, try again later"}
    assert len(a.requests("add")) + len(b.requests("add")) == asked


def test_a_clients_bad_input_does_not_trip_a_breaker(pair):
    one, two, a, b = pair
    b.control("reject", {"error": "Invalid link", "count": 5})
    for _ in range(5):
        assert one.call(action="add", service=1, link="bad", quantity=100) == {
            "error": "Incorrect link"}
    assert "order" in add(two)
    assert len(b.orders()) == 1, "prov-b is still healthy and the cheapest"


def test_a_provider_short_of_funds_is_skipped_without_a_round_trip(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    b.control("balance", {"balance": "0.01"})
    gw = Gateway(base_config(a, b), fresh_redis, tmp_path)
    try:
        gw.call(action="balance")  # learned (the background refresh would too)
        assert "order" in add(gw)  # 100 followers at prov-b cost 0.04 > 0.01
        assert b.requests("add") == [] and len(a.orders()) == 1
    finally:
        gw.stop()


def test_not_enough_funds_refreshes_the_balance(pair):
    one, two, a, b = pair
    one.call(action="balance")
    b.control("balance", {"balance": "0.05"})
    assert "order" in add(one)  # prov-b takes it: 0.04
    asked = len(b.requests("balance"))
    assert "order" in add(one)  # prov-b refuses (0.01 left): prov-a takes it
    assert len(a.orders()) == 1
    deadline = time.monotonic() + 5
    while len(b.requests("balance")) == asked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(b.requests("balance")) > asked, "the refusal made it re-read the balance"
    adds_to_b = len(b.requests("add"))
    assert "order" in add(one)
    assert len(b.requests("add")) == adds_to_b, "now skipped without asking"


def test_one_catalog_refresh_across_replicas(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, catalog_ttl_s=1)
    one = Gateway(config, fresh_redis, tmp_path / "one")
    two = Gateway(config, fresh_redis, tmp_path / "two", flush=False)
    try:
        time.sleep(4)
    finally:
        one.stop()
        two.stop()
    times = [r["t"] for r in a.requests("services")]
    assert len(times) >= 3
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.8, f"two replicas fetched the same refresh: {gaps}"


def test_a_service_specific_failure_opens_only_that_services_breaker(pair):
    one, two, a, b = pair
    b.control("reject", {"error": "Service is disabled", "count": 3})
    for _ in range(3):
        assert "order" in add(one)  # each failed over to prov-a
    assert len(a.orders()) == 3
    asked = len(b.requests("add"))
    assert "order" in add(two)
    assert len(b.requests("add")) == asked, "prov-b's followers are skipped"
    comments = two.call(action="add", service=4, link="l", comments="a\nb\nc")
    assert "order" in comments
    assert b.orders()[-1]["service"] == 14, "prov-b itself is healthy: its comments still go"
