"""`Retry-After` in the upstream client's retry policy (`gateway/upstream/client.py`).

- A huge `Retry-After` is capped at `MAX_BACKOFF_S`: the wait functions return the
  cap (the module constant as shipped), and a read answered twice with
  `Retry-After: 3600` is asked again after the cap (lowered for the test), on the
  first wait and on tenacity's.
- A write (`add`, `refill`, `cancel`) answered 429/503 may have been done: it is
  sent exactly once; an `add` answers the "not confirmed" error.

The providers are `upstream.FakeProvider`s taught to answer 429/503 with a
`Retry-After` header (the shared fake has no headers; the subclass is here).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx
import pytest
from tenacity import RetryCallState

from gateway.actions.common import NOT_CONFIRMED
from gateway.errors import Unavailable
from gateway.upstream import client
from inprocess import App, make_providers
from upstream import FakeProvider

pytestmark = pytest.mark.anyio

LINK = "https://t.co/retry"


class LimitedProvider(FakeProvider):
    """A FakeProvider that can answer the next calls of an action 429/503 with a
    `Retry-After`, and notes when each call arrived (`times`, monotonic seconds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: dict[str, list[float]] = defaultdict(list)
        self._limited: dict[str, deque[tuple[int, str | None]]] = defaultdict(deque)

    def limit(self, action: str, status: int, *retry_afters: str | None) -> None:
        """The next calls of `action` answer `status`, one per Retry-After given."""
        self._limited[action].extend((status, ra) for ra in retry_afters)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        action = dict(httpx.QueryParams(request.content.decode())).get("action", "")
        self.times[action].append(time.monotonic())
        if self._limited[action]:
            status, retry_after = self._limited[action].popleft()
            self.calls[action] += 1
            headers = {"Content-Type": "application/json"}
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            return httpx.Response(status, content=b'{"error":"Too many requests"}',
                                  headers=headers)
        return await super().handle(request)


@pytest.fixture
def providers() -> dict[str, FakeProvider]:
    """The unit tier's two providers, as LimitedProviders."""
    out: dict[str, FakeProvider] = {}
    for name, fake in make_providers().items():
        out[name] = LimitedProvider(fake.name, fake.services, key=fake.key,
                                    balance=fake.balance, currency=fake.currency,
                                    first_order=fake._next_order)
    return out


def _limited(app: App, name: str = "prov-a") -> LimitedProvider:
    return cast(LimitedProvider, app.providers[name])


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# ----------------------------------------------------------------- the cap


def test_wait_functions_cap_retry_after_at_max_backoff() -> None:
    huge = Unavailable("HTTP 429", "", retry_after=3600.0)
    assert client._first_wait(huge) == client.MAX_BACKOFF_S == 5.0
    state = cast(RetryCallState, SimpleNamespace(outcome=SimpleNamespace(exception=lambda: huge)))
    assert client._wait(state) == client.MAX_BACKOFF_S
    # under the cap the server's hint is taken as given
    assert client._first_wait(Unavailable("HTTP 503", "", retry_after=2.0)) == 2.0
    small = Unavailable("HTTP 503", "", retry_after=0.5)
    state = cast(RetryCallState, SimpleNamespace(outcome=SimpleNamespace(exception=lambda: small)))
    assert client._wait(state) == 0.5


@pytest.mark.parametrize("status", [429, 503])
async def test_read_waits_the_capped_retry_after(app: App, monkeypatch: pytest.MonkeyPatch,
                                                 status: int) -> None:
    cap = 0.3
    monkeypatch.setattr(client, "MAX_BACKOFF_S", cap)
    order = (await app.call(action="add", service=1, link=LINK, quantity=100))["order"]
    prov = _limited(app)
    prov.limit("status", status, "3600", "3600")  # twice: the first wait and tenacity's
    started = time.monotonic()
    with anyio.fail_after(3):  # an uncapped wait would be an hour
        answer = await app.call(action="status", order=order)
    took = time.monotonic() - started
    assert answer["status"] == "Pending"
    gaps = _gaps(prov.times["status"])
    assert len(gaps) == 2  # READ_ATTEMPTS: 429, 429, then the answer
    assert all(cap <= g < cap + 0.25 for g in gaps), gaps
    assert took < 1.5  # not an hour, not the shipped 5 s cap either


# ----------------------------------------------------------------- writes


@pytest.mark.parametrize("status", [429, 503])
async def test_add_answered_429_or_503_is_sent_once(app: App, status: int) -> None:
    for name in ("prov-a", "prov-b"):
        _limited(app, name).limit("add", status, "0", "0")
    resp = await app.post(action="add", service=1, link=LINK, quantity=100)
    assert resp.json() == {"error": NOT_CONFIRMED}
    assert resp.status_code < 500
    calls = [app.providers[n].calls["add"] for n in ("prov-a", "prov-b")]
    assert sum(calls) == 1, calls  # never re-sent, not there, not elsewhere


@pytest.mark.parametrize("action", ["refill", "cancel"])
async def test_refill_and_cancel_answered_429_are_sent_once(app: App, action: str) -> None:
    order = (await app.call(action="add", service=1, link=LINK, quantity=100))["order"]
    prov = _limited(app)
    prov.set_status(prov.last_order, "Completed", remains=0)
    prov.limit(action, 429, "0", "0")
    await app.call(action=action, orders=f"{order}")
    assert prov.calls[action] == 1
