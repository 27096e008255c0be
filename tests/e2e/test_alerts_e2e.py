"""Alerts end to end: two real gateway replicas over one Redis, the simulators, and a
real HTTP webhook receiver in this test. Each alert arrives once, whichever replica
saw it first, and no payload carries a key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import Gateway, Sim, base_config

FAST_BREAKER = {"breaker_min_requests": 3, "breaker_threshold": 0.5,
                "breaker_cooldown_s": 30, "breaker_window_s": 60}
QUIET_S = 1.5  # after the first copy arrives: how long a second one would have had


class Hook:
    """A webhook receiver: a real HTTP server on a free port, in a thread."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    hook.raw.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/B0/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [json.loads(raw) for raw in self.raw]
        return [b for b in found if kind is None or b["kind"] == kind]

    def wait_for(self, kind: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Every `kind` alert, once one has arrived and QUIET_S passed without another."""
        deadline = time.monotonic() + timeout
        while not self.bodies(kind):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} alert; got {[b['kind'] for b in self.bodies()]}")
            time.sleep(0.05)
        time.sleep(QUIET_S)
        return self.bodies(kind)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def replicas(sims: tuple[Sim, Sim], fresh_redis: str, tmp_path: Path,
             hook: Hook) -> Iterator[tuple[Gateway, Gateway, Sim, Sim]]:
    a, b = sims
    a.reset()
    b.reset()
    b.control("balance", {"balance": "7.5"})  # prov-b is low from the start
    config = base_config(a, b, **FAST_BREAKER)
    config["alerts"] = {"webhooks": [hook.url],
                        "balance_below": {"prov-a": "100", "prov-b": "50"}}
    one = Gateway(config, fresh_redis, tmp_path / "one")
    two = Gateway(config, fresh_redis, tmp_path / "two", flush=False)
    try:
        yield one, two, a, b
    finally:
        one.stop()
        two.stop()


def test_alerts_arrive_once_across_replicas_and_without_keys(replicas, hook):
    one, two, a, b = replicas
    # a low balance: both replicas read it (the background refresh, and `balance`)
    one.call(action="balance")
    two.call(action="balance")
    [low] = hook.wait_for("balance_low")
    assert low["subject"] == "prov-b"
    details = low["details"]
    assert (details["provider"], details["threshold"], details["currency"]) == (
        "prov-b", "50", "USD")
    assert Decimal(details["balance"]) == Decimal("7.5")  # money as text, never a float
    assert low["severity"] == "warning" and low["text"].startswith("[smm-gateway warning] ")

    # prov-b fails under both replicas until its breaker opens: one alert
    order = one.call(action="add", service=1, link="https://t/x", quantity=100)["order"]
    b.control("fault", {"fault": "500", "rate": 1.0})
    try:
        for gw in (one, two, one, two):
            gw.call(action="status", order=order)
    finally:
        b.control("fault", {"fault": None, "rate": 0})
    [opened] = hook.wait_for("breaker_open")
    assert opened["subject"] == "prov-b" and opened["details"]["provider"] == "prov-b"
    assert opened["gateway"].rsplit(":", 1)[1].isdigit()  # host:pid of the sender

    assert len(hook.bodies("balance_low")) == 1  # still once: the condition lasts
    with hook.lock:
        raw = b"".join(hook.raw)
    for secret in (b"upstream-secret-prov-a", b"upstream-secret-prov-b", b"alice-key",
                   b"bob-key"):
        assert secret not in raw
