"""Admission (`gateway.max_in_flight`) over real sockets against a gateway process:
clients that stall their body (with or without a valid key) take no serving slot,
so an identified client is answered at once; `/readyz` says not ready while every
slot is taken, and ready again when one is free."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness import Gateway, Sim, base_config

SLOTS = 8
STALLED = 3 * SLOTS  # more stalled sockets than slots
BODY_S = 20.0  # the body timeout: far longer than the test waits for an answer
ANSWER_S = 5.0  # what an identified client may wait, on a loaded machine
UPSTREAM_MS = 2500  # how long the adds that fill every slot take upstream


@pytest.fixture
def gateway(sims: tuple[Sim, Sim], fresh_redis: str,
            tmp_path: Path) -> Iterator[tuple[Gateway, Sim, Sim]]:
    a, b = sims
    a.reset()
    b.reset()
    config = base_config(a, b, max_in_flight=SLOTS, body_timeout_s=BODY_S)
    for p in config["providers"]:
        p["timeout_s"] = 4 * UPSTREAM_MS / 1000  # the slow adds are placed, not timed out
    gw = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        yield gw, a, b
    finally:
        gw.stop()
        a.reset()
        b.reset()


def base(gw: Gateway) -> str:
    return f"http://127.0.0.1:{gw.port}"


def stalled_body(port: int, query: bytes = b"") -> socket.socket:
    """A request whose head is whole and whose body stops after a few bytes."""
    body = b"key=nobody-key&action=balance&padding=" + b"x" * 100
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /api/v2" + query + b" HTTP/1.1\r\nHost: gw\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:12])
    return sock


def test_stalled_bodies_take_no_serving_slot(gateway: tuple[Gateway, Sim, Sim]) -> None:
    gw, a, b = gateway
    socks: list[socket.socket] = []
    try:
        for i in range(STALLED):  # half of them even name a client in the query string
            socks.append(stalled_body(gw.port, b"?key=alice-key&action=add" if i % 2 else b""))
        for _ in range(3):  # the server has taken in what the sockets sent
            assert httpx.get(f"{base(gw)}/livez", timeout=ANSWER_S).status_code == 200
        time.sleep(0.3)
        started = time.monotonic()
        r = httpx.post(gw.url, data={"key": "bob-key", "action": "balance"}, timeout=ANSWER_S)
        assert r.status_code == 200 and "balance" in r.json(), r.text
        assert time.monotonic() - started < ANSWER_S
        ready = httpx.get(f"{base(gw)}/readyz", timeout=ANSWER_S)
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        for sock in socks[:2]:  # still waited for: the body timeout has not come
            sock.settimeout(0.05)
            with pytest.raises(TimeoutError):
                sock.recv(1)
    finally:
        for sock in socks:
            sock.close()


def test_readyz_is_not_ready_while_every_slot_is_taken(
        gateway: tuple[Gateway, Sim, Sim]) -> None:
    gw, a, b = gateway
    ready = f"{base(gw)}/readyz"
    assert httpx.get(ready, timeout=ANSWER_S).json() == {"ready": True}
    for sim in (a, b):
        sim.control("latency", {"ms": UPSTREAM_MS})

    def add(i: int) -> dict[str, object]:
        r = httpx.post(gw.url, data={"key": "alice-key", "action": "add", "service": "2",
                                     "link": f"https://t/{i}", "quantity": "100"},
                       timeout=ANSWER_S + 4 * UPSTREAM_MS / 1000)
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=SLOTS) as pool:
        adds = [pool.submit(add, i) for i in range(SLOTS)]
        deadline = time.monotonic() + 2 * UPSTREAM_MS / 1000
        seen = httpx.get(ready, timeout=ANSWER_S)
        while seen.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = httpx.get(ready, timeout=ANSWER_S)
        answers = [f.result() for f in adds]
    assert (seen.status_code, seen.json()) == (
        503, {"ready": False, "saturated": True, "max_in_flight": SLOTS})
    assert all("order" in x for x in answers), answers
    assert httpx.get(ready, timeout=ANSWER_S).json() == {"ready": True}
