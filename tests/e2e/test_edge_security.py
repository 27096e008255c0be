"""Hostile input at the edge, over real sockets: clients that stall their request
head or body are cut off (and the next request works); the client address is taken
from X-Forwarded-For only from a trusted proxy; the failed-authentication block is
per real client address and shared by replicas."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.state.limits import AUTH_FAILURES
from harness import Gateway, Sim, two_gateways
from live_server import live_gateway

HEAD_S = 0.6
BODY_S = 0.8
GRACE_S = 1.5  # how late a cut-off may come (a loaded CI machine)


@pytest.fixture
def live(sims: tuple[Sim, Sim], fresh_redis: str,
         caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    for sim in sims:
        sim.reset()
    caplog.set_level(logging.INFO)
    with live_gateway(sims, fresh_redis, header_timeout_s=HEAD_S,
                      body_timeout_s=BODY_S) as url:
        yield url


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def works(url: str) -> None:
    r = httpx.post(f"{url}/api/v2", data={"key": "alice-key", "action": "balance"}, timeout=10)
    assert r.status_code == 200 and "balance" in r.json(), r.text


def cut_offs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "slow client cut off"]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


def test_a_stalled_request_head_is_cut_off(live: str, caplog: pytest.LogCaptureFixture) -> None:
    sock = connect(live, "127.0.0.3")
    sock.sendall(b"POST /api/v2 HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-")
    data, waited = read_until_closed(sock)
    sock.close()
    assert HEAD_S - 0.1 <= waited <= HEAD_S + GRACE_S
    assert data.startswith(b"HTTP/1.1 408 ")
    assert data.endswith(b'{"error":"Request timeout"}')
    works(live)
    [line] = cut_offs(caplog)
    assert line.levelno == logging.WARNING
    assert (line.address, line.phase) == ("127.0.0.3", "head")  # type: ignore[attr-defined]
    no_tracebacks(caplog)


def test_a_trickled_head_is_cut_off_all_the_same(live: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """One byte at a time: the limit is on the whole head, not between bytes."""
    sock = connect(live)
    started = time.monotonic()
    head = b"POST /api/v2 HTTP/1.1\r\nHost: gw\r\nX-Padding: " + b"a" * 200
    try:
        for byte in head:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - started > HEAD_S + GRACE_S + 1:
                break
    except OSError:
        pass  # cut off while sending: as it should be
    data, _ = read_until_closed(sock)
    sock.close()
    assert time.monotonic() - started <= HEAD_S + GRACE_S + 1
    assert data.startswith(b"HTTP/1.1 408 ")
    works(live)
    assert len(cut_offs(caplog)) == 1


def test_an_idle_connection_is_closed(live: str, caplog: pytest.LogCaptureFixture) -> None:
    sock = connect(live)
    data, waited = read_until_closed(sock)
    sock.close()
    assert data == b"" and waited <= HEAD_S + GRACE_S
    works(live)
    assert [r.phase for r in cut_offs(caplog)] == ["head"]  # type: ignore[attr-defined]


def test_a_stalled_body_is_cut_off(live: str, caplog: pytest.LogCaptureFixture) -> None:
    sock = connect(live, "127.0.0.4")
    body = b"key=alice-key&action=balance&padding=" + b"x" * 60
    sock.sendall(b"POST /api/v2 HTTP/1.1\r\nHost: gw\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:20])
    data, waited = read_until_closed(sock)
    sock.close()
    assert BODY_S - 0.1 <= waited <= BODY_S + GRACE_S
    assert data.startswith(b"HTTP/1.1 408 ")
    works(live)
    [line] = cut_offs(caplog)
    assert (line.address, line.phase) == ("127.0.0.4", "body")  # type: ignore[attr-defined]
    no_tracebacks(caplog)


def test_slow_answers_and_idle_keep_alive_are_not_cut_off(live: str, sims: tuple[Sim, Sim],
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    """Only the client's sending is timed: not the gateway's work, not the idle time
    between two requests on a kept-alive connection."""
    a, b = sims
    with httpx.Client(base_url=live, timeout=10) as http:
        works(live)  # the catalog is in
        for sim in (a, b):
            sim.control("latency", {"ms": int((HEAD_S + BODY_S) * 1000) + 300})
        try:
            r = http.post("/api/v2", data={"key": "alice-key", "action": "balance"})
            assert r.status_code == 200, r.text
        finally:
            for sim in (a, b):
                sim.control("latency", {"ms": 0})
        time.sleep(HEAD_S + 0.3)  # idle on the same connection, under keep-alive
        r = http.post("/api/v2", data={"key": "alice-key", "action": "balance"})
        assert r.status_code == 200
    assert cut_offs(caplog) == []
    no_tracebacks(caplog)


# --- the client address and the failed-authentication block, across replicas ----------


@pytest.fixture
def proxied(sims: tuple[Sim, Sim], fresh_redis: str,
            tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    with two_gateways(sims, fresh_redis, tmp_path, trusted_proxies=["127.0.0.1"]) as stack:
        yield stack[0], stack[1]


def post(gw: Gateway, key: str, forwarded_for: str | None = None,
         source: str = "127.0.0.1") -> httpx.Response:
    """A request from `source` (127.0.0.1 is the trusted proxy), optionally forwarded."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.post(gw.url, data={"key": key, "action": "balance"}, headers=headers)


def failed_addresses(gw: Gateway) -> list[str]:
    import json

    out = []
    for line in gw.log().splitlines():
        if line.startswith("{") and '"authentication failed"' in line:
            out.append(json.loads(line)["address"])
    return out


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
        proxied: tuple[Gateway, Gateway]) -> None:
    one, _ = proxied
    assert post(one, "wrong", "6.6.6.6, 203.0.113.7").status_code == 401
    assert post(one, "wrong", "203.0.113.7", source="127.0.0.2").status_code == 401
    assert failed_addresses(one) == ["203.0.113.7", "127.0.0.2"]


def test_bad_keys_from_one_address_block_only_it_on_every_replica(
        proxied: tuple[Gateway, Gateway]) -> None:
    one, two = proxied
    codes = [post(one, f"guess-{i}", "203.0.113.66").status_code
             for i in range(AUTH_FAILURES + 1)]
    assert codes == [401] * AUTH_FAILURES + [429]
    # a valid key from another address is served, by both replicas
    for gw in (one, two):
        r = post(gw, "alice-key", "203.0.113.77")
        assert r.status_code == 200 and "balance" in r.json(), r.text
    # the blocked address is refused by the other replica too, right key or not
    for key in ("alice-key", "guess-x"):
        r = post(two, key, "203.0.113.66")
        assert r.status_code == 429 and r.json() == {"error": "Too many requests"}
    # an untrusted peer that claims to be the blocked address is itself
    assert post(two, "alice-key", "203.0.113.66", source="127.0.0.2").status_code == 200
    # the proxy's own address is not blocked
    assert post(one, "alice-key").status_code == 200
    log = one.log()
    assert "guess-1" not in log and "alice-key" not in log
