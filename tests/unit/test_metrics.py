"""Metrics, probes and the access log, in-process.

The metrics are process-wide (one registry per process, shared by every test of an
xdist worker), so each test scrapes before and after and looks at the difference.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from restartable import Server

from gateway import metrics
from gateway.clock import ManualClock
from gateway.edge.app import create_app
from gateway.models import OrderRecord
from gateway.ops.logs import JsonFormatter
from inprocess import ALICE, BOB, App, make_settings, serve, upstream_key
from peer_client import send_from
from upstream import FakeProvider, HttpStatus, Reject, Unreachable, transport_for

pytestmark = pytest.mark.anyio

SECRETS = (ALICE, BOB, upstream_key("prov-a"), upstream_key("prov-b"))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(app: App) -> tuple[str, Samples]:
    response, = send_from(app, "127.0.0.1", httpx.Request("GET", "http://gateway/metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


class Delta:
    """Counts between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.access"]


async def add(app: App, key: str = ALICE, service: int = 1, quantity: int = 100) -> Any:
    return await app.call(key, action="add", service=service, link="https://t.co/x",
                          quantity=quantity)


# --- counters and money ------------------------------------------------------------


async def test_a_scrape_counts_requests_upstream_calls_orders_and_money(app: App) -> None:
    _, before = await scrape(app)
    orders = [(await add(app))["order"] for _ in range(3)]  # prov-a #1: 0.50, sold at 0.75
    assert (await add(app, service=3, quantity=1000))["order"]  # price 0.05, cost 0.04
    status = await app.call(action="status", orders=",".join(map(str, orders)))
    assert set(status) == {str(o) for o in orders}
    assert (await app.post(action="add", service=99, link="https://t.co/x",
                           quantity=100)).status_code == 400
    assert (await app.post(key="wrong-key", action="balance")).status_code == 401
    assert (await app.post(action="frobnicate")).status_code == 400
    text, after = await scrape(app)
    d = Delta(before, after)

    assert d("smm_requests_total", action="add", outcome="ok") == 4
    assert d("smm_requests_total", action="add", outcome="client_error") == 1
    assert d("smm_requests_total", action="status", outcome="ok") == 1
    assert d("smm_requests_total", action="balance", outcome="auth_error") == 1
    assert d("smm_requests_total", action="other", outcome="client_error") == 1
    assert d("smm_request_seconds_count", action="add") == 5
    assert d("smm_request_seconds_bucket", action="add", le="+Inf") == 5
    assert d("smm_request_seconds_sum", action="add") > 0
    assert d("smm_upstream_calls_total", provider="prov-a", action="add", outcome="ok") == 4
    assert d("smm_upstream_calls_total", provider="prov-a", action="status", outcome="ok") == 1
    assert d("smm_upstream_seconds_count", provider="prov-a", action="add") == 4

    assert d("smm_orders_total", provider="prov-a", service="1") == 3
    assert d("smm_orders_total", provider="prov-a", service="3") == 1
    assert d("smm_charged_total", provider="prov-a", service="1") == pytest.approx(0.225)
    assert d("smm_cost_total", provider="prov-a", service="1") == pytest.approx(0.15)
    assert d("smm_margin_total", provider="prov-a", service="1") == pytest.approx(0.075)
    assert d("smm_charged_total", provider="prov-a", service="3") == pytest.approx(0.05)
    assert d("smm_cost_total", provider="prov-a", service="3") == pytest.approx(0.04)
    assert d("smm_margin_total", provider="prov-a", service="3") == pytest.approx(0.01)
    assert d("smm_orders_total", provider="prov-b", service="1") == 0
    assert "frobnicate" not in text  # a client's text never becomes a label
    for secret in (*SECRETS, "wrong-key"):
        assert secret not in text


async def test_upstream_outcomes_are_labelled_by_what_happened(app: App) -> None:
    _, before = await scrape(app)
    app.providers["prov-a"].fail("add", Reject("Service is disabled"))  # next: prov-b
    assert "order" in await add(app)
    app.providers["prov-a"].fail("add", Unreachable(), Unreachable())  # retried, then prov-b
    assert "order" in await add(app)
    app.providers["prov-a"].fail("add", HttpStatus(502))  # a write that may have landed
    assert (await add(app)) == {
        "error": "Order could not be confirmed; do not resend it, contact support"}
    _, after = await scrape(app)
    d = Delta(before, after)

    def calls(provider: str, outcome: str) -> float:
        return d("smm_upstream_calls_total", provider=provider, action="add", outcome=outcome)

    assert calls("prov-a", "rejected") == 1
    assert calls("prov-a", "unreachable") == 2
    assert calls("prov-a", "unavailable") == 1
    assert calls("prov-b", "ok") == 2
    assert d("smm_orders_total", provider="prov-b", service="1") == 2
    assert d("smm_orders_total", provider="prov-a", service="1") == 0
    assert d("smm_requests_total", action="add", outcome="ok") == 2
    assert d("smm_requests_total", action="add", outcome="not_confirmed") == 1


def test_an_order_below_cost_counts_as_a_loss_never_a_negative_margin() -> None:
    def current() -> Samples:
        return parse(metrics.exposition().decode())

    before = current()
    record = OrderRecord(client="x", service=77, provider="prov-z", upstream_service="1",
                         link="l", quantity=1000, charge=Decimal("0.30000"),
                         cost=Decimal("0.45000"), created=0)
    metrics.order_placed(record)
    d = Delta(before, current())
    assert d("smm_orders_total", provider="prov-z", service="77") == 1
    assert d("smm_charged_total", provider="prov-z", service="77") == pytest.approx(0.30)
    assert d("smm_cost_total", provider="prov-z", service="77") == pytest.approx(0.45)
    assert d("smm_margin_total", provider="prov-z", service="77") == 0
    assert d("smm_loss_total", provider="prov-z", service="77") == pytest.approx(0.15)


# --- gauges ------------------------------------------------------------------------


async def test_gauges_show_balances_catalog_age_breakers_and_unknown_orders(
        app: App, clock: ManualClock) -> None:
    app.in_app(app.resources.balances.refresh, "prov-a")
    clock.advance(120)
    _, samples = await scrape(app)
    assert value(samples, "smm_provider_balance", provider="prov-a") == 100.5
    assert ("smm_provider_balance", (("provider", "prov-b"),)) not in samples  # never asked
    assert value(samples, "smm_catalog_age_seconds", provider="prov-a") == 120
    assert value(samples, "smm_catalog_age_seconds", provider="prov-b") == 120
    assert value(samples, "smm_breaker_open", provider="prov-a") == 0
    assert value(samples, "smm_unknown_orders") == 0

    for _ in range(3):  # breaker_min_requests: 3
        app.in_app(app.resources.breakers.failure, "prov-a")
    app.providers["prov-b"].fail("add", HttpStatus(502))  # prov-a skipped: open
    assert "error" in await add(app)
    _, samples = await scrape(app)
    assert value(samples, "smm_breaker_open", provider="prov-a") == 0  # read 5 s ago: kept
    clock.advance(5)
    _, samples = await scrape(app)
    assert value(samples, "smm_breaker_open", provider="prov-a") == 1
    assert value(samples, "smm_breaker_open", provider="prov-b") == 0
    assert value(samples, "smm_unknown_orders") == 1
    assert value(samples, "smm_catalog_age_seconds", provider="prov-a") == 125


async def test_a_provider_list_never_fetched_is_infinitely_old(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    providers["prov-b"].fail_always("services", HttpStatus(500))
    async with serve(make_settings(), redis_url, providers, clock) as app:
        _, samples = await scrape(app)
        assert math.isinf(value(samples, "smm_catalog_age_seconds", provider="prov-b"))
        ready = await app.http.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"ready": False, "lists_missing": 1})


# --- Redis errors, probes ----------------------------------------------------------


async def test_redis_errors_are_counted_and_the_scrape_still_answers(
        tmp_path: Path, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    server = Server(tmp_path / "redis")
    try:
        async with serve(make_settings(), server.url, providers, clock) as app:
            order = (await add(app))["order"]
            _, before = await scrape(app)
            server.stop()
            clock.advance(10)  # cached keys and the scrape's Redis reads expire
            response = await app.post(action="status", order=order)
            assert response.status_code == 503
            ready = await app.http.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"ready": False, "redis": False})
            assert (await app.http.get("/livez")).status_code == 200
            _, after = await scrape(app)  # no Redis: the last known gauges
            d = Delta(before, after)
            assert d("smm_redis_errors_total") == 1
            assert d("smm_requests_total", action="status", outcome="redis_error") == 1
            assert value(after, "smm_unknown_orders") == 0
    finally:
        server.stop()


async def test_livez_readyz_and_healthz(app: App) -> None:
    live = await app.http.get("/livez")
    assert (live.status_code, live.content) == (200, b'{"live":true}')
    ready = await app.http.get("/readyz")
    assert (ready.status_code, ready.content) == (200, b'{"ready":true}')
    health = await app.http.get("/healthz")
    assert (health.status_code, health.content) == (200, b'{"ok":true}')


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[asyncio.Event]:
    """The app's lifespan in this loop; setting the event begins its shutdown."""
    up, stop = asyncio.Event(), asyncio.Event()

    async def life() -> None:
        async with app.lifespan():
            up.set()
            await stop.wait()

    task = asyncio.create_task(life())
    await asyncio.wait([task, asyncio.create_task(up.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    try:
        yield stop
    finally:
        stop.set()
        await task


async def test_readyz_says_503_as_soon_as_shutdown_begins(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        tmp_path: Path) -> None:
    app = create_app(make_settings(), redis_url, data_dir=tmp_path,
                     transport=transport_for(providers), clock=clock)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    async with running(app) as stop:
        assert (await http.get("/readyz")).status_code == 200
        hold = providers["prov-a"].hold("add")
        placing = asyncio.create_task(http.post("/api/v2", data={
            "key": ALICE, "action": "add", "service": "1", "link": "https://t.co/x",
            "quantity": "100"}))
        await hold.entered.wait()
        stop.set()  # shutdown begins; it waits for the dispatch in flight
        try:
            for _ in range(100):
                if getattr(app.state, "shutting_down", False):
                    break
                await asyncio.sleep(0.01)
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (503, {"ready": False,
                                                               "shutting_down": True})
            assert (await http.get("/livez")).status_code == 200
        finally:
            hold.release.set()
        assert (await placing).json() == {"order": 1000}
    await http.aclose()


# --- the access log ----------------------------------------------------------------


async def test_one_access_line_per_request_without_keys(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    order = (await add(app))["order"]
    caplog.clear()
    await app.call(action="status", orders=f"{order},42,43")
    await app.post(key="wrong-key", action="status", order=order)
    await app.http.get("/api/v2", params={"key": BOB, "action": "balance"})
    await app.http.get("/metrics")  # not an API request: no line
    lines = access_lines(caplog)
    assert len(lines) == 3
    formatted = [json.loads(JsonFormatter().format(r)) for r in lines]
    for line in formatted:
        assert line["logger"] == "gateway.access"
        assert line["replica"] == f"{os.uname().nodename}:{os.getpid()}"
        assert isinstance(line["ms"], float) and line["ms"] >= 0
    ok, denied, by_get = formatted
    assert {k: ok[k] for k in ("client", "action", "ids", "status", "outcome")} == {
        "client": "alice", "action": "status", "ids": 3, "status": 200, "outcome": "ok"}
    assert {k: denied[k] for k in ("client", "action", "ids", "status", "outcome")} == {
        "client": None, "action": "status", "ids": 1, "status": 401, "outcome": "auth_error"}
    assert {k: by_get[k] for k in ("client", "action", "ids", "status", "outcome")} == {
        "client": "bob", "action": "balance", "ids": 0, "status": 200, "outcome": "ok"}
    text = "\n".join(JsonFormatter().format(r) for r in lines)
    for secret in (*SECRETS, "wrong-key"):
        assert secret not in text


@pytest.mark.gateway(error_status="always-200")
async def test_the_access_line_has_the_status_sent(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = await app.post(action="add", service=99, link="https://t.co/x", quantity=1)
    assert response.status_code == 200
    [line] = access_lines(caplog)
    assert (line.__dict__["status"], line.__dict__["outcome"]) == (200, "client_error")


@pytest.mark.gateway(access_log=False)
async def test_the_access_log_can_be_turned_off(
        app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    _, before = await scrape(app)
    await app.call(action="balance")
    assert access_lines(caplog) == []
    _, after = await scrape(app)
    assert Delta(before, after)("smm_requests_total", action="balance", outcome="ok") == 1


# --- the module, and many processes ------------------------------------------------


def test_the_metrics_module_is_a_leaf() -> None:
    """Every layer records through it, so it may import only the base modules."""
    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    ours = {m for m in imported if m.startswith("gateway")}
    assert ours <= {"gateway.errors", "gateway.models"}


_WORKER = textwrap.dedent("""
    import os, sys
    from gateway import metrics
    assert metrics.MULTIPROCESS
    metrics.request("status", "ok", 0.002)
    metrics.BALANCE.labels("prov-a").set(float(sys.argv[1]))
    if sys.argv[2] == "exit":
        metrics.process_exit()
    print(os.getpid())
""")
_SCRAPER = textwrap.dedent("""
    import sys
    from gateway import metrics
    sys.stdout.write(metrics.exposition().decode())
""")


def test_workers_are_merged_and_dead_workers_gauges_drop_out(tmp_path: Path) -> None:
    env = {**os.environ, metrics.ENV_DIR: str(tmp_path)}

    def run(code: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                              capture_output=True, text=True, timeout=60)
        return done.stdout

    clean = run(_WORKER, "10", "exit").strip()  # stopped cleanly
    crashed = run(_WORKER, "20", "crash").strip()  # gone without a word
    assert (tmp_path / f"gauge_livemostrecent_{crashed}.db").exists()
    samples = parse(run(_SCRAPER))
    assert value(samples, "smm_requests_total", action="status", outcome="ok") == 2
    assert value(samples, "smm_request_seconds_count", action="status") == 2
    assert value(samples, "smm_request_seconds_bucket", action="status", le="0.0025") == 2
    assert ("smm_provider_balance", (("provider", "prov-a"),)) not in samples
    for pid in (clean, crashed):
        assert not (tmp_path / f"gauge_livemostrecent_{pid}.db").exists()
        assert (tmp_path / f"counter_{pid}.db").exists()  # counts outlive their worker
