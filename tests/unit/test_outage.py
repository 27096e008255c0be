"""A Redis outage: every request that needs Redis answers 503 with the same JSON, the
outage is logged once (no traceback per request), and its end is logged once.

Each test runs its own embedded redis-server, so it can stop and restart it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from restartable import Server

from gateway.clock import ManualClock
from gateway.state.clients import CACHE_S
from gateway.state.ids import ROLLBACK_GAP
from inprocess import App, make_settings, serve
from upstream import FakeProvider

pytestmark = pytest.mark.anyio

TEMPORARY = b'{"error":"Temporary error, try again later"}'
DOWN = "redis unavailable"
BACK = "redis is back"


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(text)]


async def place(app: App) -> int:
    answer = await app.call(action="add", service=1, link="https://t.co/x", quantity=100)
    order: int = answer["order"]
    return order


async def test_outage_answers_503_logs_once_and_recovers(
        server: Server, providers: dict[str, FakeProvider], clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(make_settings(), server.url, providers, clock) as app:
        order = await place(app)
        server.stop()
        clock.advance(CACHE_S)  # key lookups go to Redis again
        caplog.clear()

        requests: list[dict[str, Any]] = [
            {"action": "services"}, {"action": "status", "order": order},
            {"action": "balance"}, {"action": "add", "service": 1, "link": "https://t.co/y",
                                    "quantity": 100},
            {"action": "balance", "key": "bob-key"}]
        for i in range(20):
            fields = dict(requests[i % len(requests)])
            response = await app.post(fields.pop("key", "alice-key"), **fields)
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/json"
            assert response.content == TEMPORARY

        [down] = messages(caplog, DOWN)
        assert down.levelno == logging.ERROR and down.name == "gateway.edge"
        assert [r for r in caplog.records if r.exc_info] == []
        assert messages(caplog, BACK) == []
        assert providers["prov-a"].calls["add"] == 1  # nothing was sent during the outage

        server.restart()
        status = await app.post(action="status", order=order)
        assert status.status_code == 200
        assert status.json()["status"] == "Pending"
        # the next id: the next of this process's block, or, once it has seen that a
        # restarted server answers (a new replication id: it may have lost the writes
        # that raised the counter), one ROLLBACK_GAP past every id handed out before
        after = (await app.call(action="add", service=1, link="https://t.co/z",
                                quantity=100))["order"]
        assert after == order + 1 or after > order + ROLLBACK_GAP
        [back] = messages(caplog, BACK)
        assert back.refused_requests == 20  # type: ignore[attr-defined]
        assert len(messages(caplog, DOWN)) == 1


async def test_outage_is_logged_once_while_some_answers_come_from_memory(
        server: Server, providers: dict[str, FakeProvider], clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(make_settings(), server.url, providers, clock) as app:
        order = await place(app)
        server.stop()
        caplog.clear()
        answers = []
        for _ in range(5):
            answers.append((await app.post(action="services")).status_code)  # key cached
            answers.append((await app.post(action="status", order=order)).status_code)
        back, down = len(messages(caplog, BACK)), len(messages(caplog, DOWN))
        server.restart()
    assert answers == [200, 503] * 5
    assert (back, down) == (0, 1)


async def test_requests_that_end_an_outage_at_once_log_it_once(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from gateway.edge.answers import Outage
    from gateway.errors import StoreUnavailable
    from gateway.state.connect import connect

    caplog.set_level(logging.INFO)
    outage = Outage()
    outage.failed(StoreUnavailable("redis: gone"))
    redis = connect(server.url)
    try:  # both see the outage, both ask Redis, one ends it: no error for the other
        first = asyncio.ensure_future(outage.succeeded(redis))
        await asyncio.sleep(0)  # the first is asking Redis...
        outage.failed(StoreUnavailable("redis: gone"))  # ...another request fails...
        await asyncio.gather(first, outage.succeeded(redis))  # ...and a third asks too
    finally:
        await redis.aclose()
    assert outage.since is None
    assert len(messages(caplog, BACK)) == 1
