"""Reliability over real processes: a shutdown drains the `add`s in flight, and a
replica killed while it holds an Idempotency-Key does not block the key: once its
lease lapses, a retry answers from the order record, never by sending again."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from harness import Gateway, Sim, base_config

ADD = {"action": "add", "service": "1", "link": "https://t.co/drain", "quantity": "100"}
NOT_CONFIRMED = "Order could not be confirmed; do not resend it, contact support"


def adds(*sims: Sim) -> int:
    return sum(len(s.requests("add")) for s in sims)


def slow(ms: int, *sims: Sim) -> None:
    for s in sims:
        s.control("latency", {"ms": ms})


def wait_for_add(*sims: Sim) -> None:
    deadline = time.monotonic() + 10
    while adds(*sims) < 1:
        assert time.monotonic() < deadline, "the add never reached the provider"
        time.sleep(0.02)


def test_sigterm_drains_an_add_in_flight(stack: tuple[Gateway, Sim, Sim]) -> None:
    gw, a, b = stack
    slow(1500, a, b)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, gw.url, data={"key": "alice-key", **ADD},
                              timeout=30)
        wait_for_add(a, b)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)  # while the provider still holds the add
        answer = pending.result().json()
    assert "order" in answer, answer
    slow(0, a, b)
    gw.stop()
    gw.start()
    status = gw.call(action="status", order=answer["order"])
    assert status["status"] == "Pending", status
    assert len(a.orders()) + len(b.orders()) == 1


def test_a_killed_holder_of_an_idempotency_key_does_not_block_it(
        sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path) -> None:
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, idempotency_lease_s=2)
    for p in config["providers"]:
        p["timeout_s"] = 0.5
    gw = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        slow(3000, a, b)
        headers = {"Idempotency-Key": "panel-order-1"}
        data = {"key": "alice-key", **ADD}
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, gw.url, data=data, headers=headers, timeout=30)
            wait_for_add(a, b)
            assert gw.proc is not None
            gw.proc.kill()  # kill -9 while the provider holds the add
            try:
                pending.result()
            except httpx.HTTPError:
                pass
        slow(0, a, b)
        gw.stop()
        gw.start()
        started = time.monotonic()
        retry = httpx.post(gw.url, data=data, headers=headers, timeout=30)
        waited = time.monotonic() - started
        # the dead holder's order may exist upstream: never sent again, not "in progress"
        assert retry.json() == {"error": NOT_CONFIRMED}, retry.text
        assert waited < 8, waited
        assert adds(a, b) == 1
        listed = redis.Redis.from_url(fresh_redis).smembers("gw:orders:unknown")
        assert len(listed) == 1  # `orders unknown` shows it to the operator
    finally:
        gw.stop()
