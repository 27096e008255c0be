"""Clients and money over HTTP: two gateway processes, one Redis, simulator upstreams."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness import ROOT, Gateway, Sim, two_gateways

NO_FUNDS = {"error": "Not enough funds on balance"}


def cli(redis_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                          env={**os.environ, "REDIS_URL": redis_url}, capture_output=True,
                          text=True, check=check)


def create_client(redis_url: str, name: str, *args: str) -> str:
    out = cli(redis_url, "keys", "create", "--name", name, *args).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key:"))


@pytest.fixture
def pair(sims: tuple[Sim, Sim], fresh_redis: str,
         tmp_path: Path) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    with two_gateways(sims, fresh_redis, tmp_path) as stack:
        yield stack


def balance(gw: Gateway, key: str) -> str:
    return str(gw.call(key=key, action="balance")["balance"])


def history(redis_url: str, name: str) -> str:
    return cli(redis_url, "keys", "history", name).stdout


def test_100_concurrent_adds_against_a_balance_for_50(pair):
    one, two, a, b = pair
    # likes: 0.30 per 1000 (prov-a 0.20 x 1.5); 100 likes cost 0.03; 1.50 pays for 50
    key = create_client(one.redis_url, "reseller", "--credit", "1.50")

    def add(i: int) -> dict:
        gw = (one, two)[i % 2]
        r = httpx.post(gw.url, data={"key": key, "action": "add", "service": "2",
                                     "link": f"https://t/{i}", "quantity": "100"}, timeout=30)
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(add, range(100)))
    placed = [x for x in answers if "order" in x]
    refused = [x for x in answers if x == NO_FUNDS]
    assert len(placed) == 50 and len(refused) == 50, answers
    assert len({x["order"] for x in placed}) == 50
    assert len(a.orders()) + len(b.orders()) == 50, "exactly 50 orders reached upstream"
    assert balance(one, key) == balance(two, key) == "0.00000"
    check = cli(one.redis_url, "keys", "check", "reseller")
    assert "balance 0.00000, ledger sum 0.00000: ok" in check.stdout
    assert history(one.redis_url, "reseller").count(" charge ") == 50


def test_a_partial_polled_20_times_from_two_processes_refunds_once(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "reseller", "--credit", "10")
    order = one.call(key=key, action="add", service=1, link="l", quantity=1000)["order"]
    assert balance(one, key) == "9.40000"  # 0.60 x 1000 / 1000
    b.control("orders/1", {"status": "Partial", "remains": 250})

    barrier = threading.Barrier(20)

    def poll(i: int) -> dict:
        barrier.wait()
        return dict((one, two)[i % 2].call(key=key, action="status", order=order))

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(poll, range(20)))
    assert all(x["status"] == "Partial" and x["charge"] == "0.45000" for x in answers)
    assert balance(one, key) == "9.55000"  # 0.60 x 250 / 1000 = 0.15 back, once
    assert history(one.redis_url, "reseller").count(" refund ") == 1
    assert "ok" in cli(one.redis_url, "keys", "check").stdout


def test_canceled_refunds_the_whole_charge(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "reseller", "--credit", "1")
    order = one.call(key=key, action="add", service=2, link="l", quantity=1000)["order"]
    assert balance(one, key) == "0.70000"
    assert one.call(key=key, action="cancel", orders=str(order))[0]["cancel"] == 1
    assert one.call(key=key, action="status", order=order)["status"] == "Canceled"
    assert two.call(key=key, action="status", order=order)["status"] == "Canceled"
    assert balance(one, key) == "1.00000"


def test_release_on_rejection_and_reservation_kept_when_ambiguous(pair):
    one, two, a, b = pair
    url = one.redis_url
    key = create_client(url, "reseller", "--credit", "1")
    for sim in (a, b):
        sim.control("reject", {"error": "Not enough funds on balance", "count": 1})
    r = one.post(key=key, action="add", service=1, link="l", quantity=100)
    assert r.json()["error"].startswith("Service is temporarily unavailable")
    assert balance(one, key) == "1.00000", "a definite rejection gives the money back"
    assert " release " in history(url, "reseller")

    b.control("fault", {"fault": "drop", "rate": 1.0})
    first = one.post(key=key, action="add", service=1, link="l", quantity=100)
    second = one.post(key=key, action="add", service=1, link="m", quantity=100)
    assert "could not be confirmed" in first.json()["error"]
    assert "could not be confirmed" in second.json()["error"]
    assert balance(one, key) == "0.88000", "an ambiguous order keeps its reservation"
    unknown = cli(url, "orders", "unknown").stdout
    ids = [int(line.split()[0]) for line in unknown.splitlines()[1:]]
    assert len(ids) == 2
    out = cli(url, "orders", "resolve", str(ids[0]), "--not-placed").stdout
    assert "0.06000 back to reseller" in out
    assert balance(one, key) == "0.94000"
    again = cli(url, "orders", "resolve", str(ids[0]), "--not-placed", check=False)
    assert again.returncode == 1 and "not unknown" in again.stderr
    b.control("fault", {"fault": None, "rate": 0})
    b.control("reset")
    b.http.post("/api/v2", data={"key": "k", "action": "add", "service": "11",
                                  "link": "m", "quantity": "100"})  # the order "it took"
    cli(url, "orders", "resolve", str(ids[1]), "--placed", "1")
    assert one.call(key=key, action="status", order=ids[1])["status"] == "Pending"
    assert balance(one, key) == "0.94000"
    assert cli(url, "orders", "unknown").stdout.startswith("no orders")
    assert "ok" in cli(url, "keys", "check").stdout


def test_ledger_and_operator_balances(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "reseller", "--credit", "12.5")
    assert one.call(key=key, action="balance") == {"balance": "12.50000", "currency": "USD"}
    # the config's alice is an operator: the sum of upstream balances
    assert one.call(action="balance") == {"balance": "2000.00000", "currency": "USD"}
    out = cli(one.redis_url, "keys", "topup", "reseller", "2.5", "--note", "bank").stdout
    assert "balance 15.00000" in out
    assert balance(two, key) == "15.00000"
    assert "bank" in history(one.redis_url, "reseller")
    listing = cli(one.redis_url, "keys", "list").stdout
    assert "reseller" in listing and "15.00000" in listing and "alice" in listing


def test_client_prices_and_allowed_services(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "reseller", "--credit", "5", "--markup", "2",
                        "--services", "1,2")
    services = {s["service"]: s for s in one.call(key=key, action="services")}
    assert sorted(services) == [1, 2]
    assert services[1]["rate"] == "1.20000" and services[2]["rate"] == "0.60000"
    r = one.post(key=key, action="add", service=3, link="l", quantity=1000)
    assert r.json() == {"error": "Incorrect service ID"}
    order = one.call(key=key, action="add", service=2, link="l", quantity=1000)["order"]
    assert one.call(key=key, action="status", order=order)["charge"] == "0.60000"
    assert balance(one, key) == "4.40000"
    # the owner still sees the whole catalog at the gateway's prices
    assert len(one.call(action="services")) == 9


def test_rate_limit_is_shared_by_replicas(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "fast", "--mode", "operator", "--rate-limit", "2",
                        "--burst", "5")
    codes = [(one, two)[i % 2].post(key=key, action="services").status_code
             for i in range(20)]
    assert 5 <= codes.count(200) <= 8, codes
    assert codes.count(429) >= 12
    r = one.post(key=key, action="services")
    assert r.status_code == 429 and r.json() == {"error": "Too many requests"}


def test_rotate_and_disable(pair):
    one, two, a, b = pair
    old = create_client(one.redis_url, "reseller", "--credit", "1")
    assert balance(one, old) == "1.00000"
    new = cli(one.redis_url, "keys", "rotate", "reseller").stdout.split("new key: ")[1].split()[0]
    time.sleep(2.2)  # lookups are cached for 2 s per process
    for gw in (one, two):
        assert gw.post(key=old, action="balance").json() == {"error": "Invalid API key"}
        assert balance(gw, new) == "1.00000"
    cli(one.redis_url, "keys", "disable", "reseller")
    time.sleep(2.2)
    r = two.post(key=new, action="balance")
    assert r.status_code == 401 and r.json() == {"error": "Invalid API key"}
    cli(one.redis_url, "keys", "enable", "reseller")
    time.sleep(2.2)
    assert balance(two, new) == "1.00000"


def test_failed_authentication_is_limited_per_address(pair):
    one, two, a, b = pair
    codes = [one.post(key=f"guess-{i}", action="balance").status_code for i in range(25)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
    # once blocked, even a right key from that address is refused: guessing learns nothing
    assert one.post(action="balance").status_code == 429
    log = one.log()
    assert "guess-1" not in log and "authentication failed" in log


def add_fields(**extra: str) -> dict[str, str]:
    return {"action": "add", "service": "1", "link": "https://t/dup", "quantity": "100",
            **extra}


def test_duplicate_window_answers_the_first_order(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "panel", "--credit", "10", "--dup-window", "60")
    b.control("latency", {"ms": 300})

    def add(i: int) -> dict:
        gw = (one, two)[i % 2]
        return dict(gw.call(key=key, **add_fields()))

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(add, range(6)))
    assert len({x["order"] for x in answers}) == 1, answers
    assert len(b.orders()) == 1, "the re-sent add never reached a provider again"
    other = one.call(key=key, **add_fields(quantity="200"))
    assert other["order"] != answers[0]["order"]
    assert balance(one, key) == "9.82000"  # charged for two orders, not seven


def test_idempotency_key(pair):
    one, two, a, b = pair
    key = create_client(one.redis_url, "panel", "--credit", "10")
    b.control("latency", {"ms": 300})
    headers = {"Idempotency-Key": "req-42"}
    data = {"key": key, **add_fields()}

    def add(i: int) -> httpx.Response:
        gw = (one, two)[i % 2]
        return httpx.post(gw.url, data=data, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [r.json() for r in pool.map(add, range(4))]
    assert len({x["order"] for x in answers}) == 1, answers
    assert len(b.orders()) == 1
    again = two.http.post(two.url, data=data, headers=headers).json()
    assert again == answers[0]
    changed = one.http.post(one.url, data={**data, "quantity": "300"}, headers=headers)
    assert changed.status_code == 400
    assert "different request" in changed.json()["error"]
    # the field works like the header; an error answer is replayed too
    low = {"key": key, **add_fields(quantity="1", idempotency_key="req-43")}
    first, second = one.http.post(one.url, data=low), two.http.post(two.url, data=low)
    assert first.json() == second.json() == {"error": "Quantity less than minimal 20"}
    assert balance(one, key) == "9.94000"
