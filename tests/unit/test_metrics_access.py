"""`/metrics` names providers and money: it answers loopback, a trusted proxy's own
requests, and a bearer `gateway.metrics_key`; anyone else gets a JSON 403 (no key
set) or 401 (a key set: none sent, or a wrong one)."""

from __future__ import annotations

import httpx
import pytest

from inprocess import App
from peer_client import send_from

METRICS_KEY = "metrics-key-0123456789abcdef"
PROXY = "10.0.0.5"
WORLD = "203.0.113.9"


def scrape(app: App, peer: str, headers: dict[str, str] | None = None) -> httpx.Response:
    r, = send_from(app, peer, httpx.Request("GET", "http://gateway/metrics",
                                            headers=headers or {}))
    return r


def served(r: httpx.Response) -> bool:
    return r.status_code == 200 and "smm_requests_total" in r.text


def refused(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "smm_" not in r.text and "prov-a" not in r.text
    message: str = r.json()["error"]
    return message


@pytest.mark.gateway(trusted_proxies=[PROXY])
async def test_by_default_only_loopback_and_trusted_proxies(app: App) -> None:
    for peer in ("127.0.0.1", "::1", PROXY):
        assert served(scrape(app, peer)), peer
    assert "trusted_proxies" in refused(scrape(app, WORLD), 403)
    # a request the trusted proxy forwards for someone else is that someone's
    assert refused(scrape(app, PROXY, {"X-Forwarded-For": WORLD}), 403)
    assert served(scrape(app, PROXY, {"X-Forwarded-For": "127.0.0.1"}))
    # no key is set: a bearer key opens nothing
    assert refused(scrape(app, WORLD, {"Authorization": "Bearer guess"}), 401)


@pytest.mark.gateway(metrics_key=METRICS_KEY)
async def test_with_a_metrics_key_anyone_who_sends_it(app: App) -> None:
    assert served(scrape(app, WORLD, {"Authorization": f"Bearer {METRICS_KEY}"}))
    r = scrape(app, WORLD)
    assert "Bearer" in refused(r, 401) and r.headers["www-authenticate"] == "Bearer"
    assert refused(scrape(app, WORLD, {"Authorization": "Bearer not-the-key"}), 401)
    assert served(scrape(app, "127.0.0.1"))  # loopback needs none
