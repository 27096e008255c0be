"""Cold start: until every provider's list has been fetched once, `services` is an
error (never a shrunken list, which panels would act on by disabling services),
an `add` for a service id not known yet is that error too (not "Incorrect service ID"),
`/readyz` says not ready, and the log names the provider that is missing."""

from __future__ import annotations

import logging

import pytest

from gateway.actions.common import NOT_READY
from gateway.clock import ManualClock
from gateway.routing.catalog import RETRY_FAILED_S
from inprocess import make_settings, serve
from upstream import FakeProvider, Unreachable

pytestmark = pytest.mark.anyio


def listed(answer: list[dict[str, object]]) -> set[int]:
    return {int(str(item["service"])) for item in answer}


async def test_services_is_an_error_until_every_list_is_in(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    providers["prov-b"].fail_always("services", Unreachable())
    async with serve(make_settings(), redis_url, providers, clock) as app:
        r = await app.post(action="services")
        assert r.status_code == 503
        assert r.json() == {"error": NOT_READY}
        ready = await app.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "lists_missing": 1}
        assert "prov-b" not in ready.text  # the probe is public: names go to the log
        # an id not (yet) known may be in the missing list: not "Incorrect service ID"
        add = await app.post(action="add", service=99, link="https://t.co/x", quantity=100)
        assert (add.status_code, add.json()) == (503, {"error": NOT_READY})
        assert [getattr(rec, "provider", None) for rec in caplog.records
                if rec.getMessage().startswith("no service list")] == ["prov-b"]

        providers["prov-b"].fail_always("services", None)
        clock.advance(RETRY_FAILED_S + 1)  # the failed refresh's back-off is over
        app.in_app(app.resources.catalog.sync)
        r = await app.post(action="services")
        assert r.status_code == 200
        assert listed(r.json()) == {1, 2, 3}
        assert (await app.http.get("/readyz")).json() == {"ready": True}
        add = await app.post(action="add", service=99, link="https://t.co/x", quantity=100)
        assert add.json() == {"error": "Incorrect service ID"}


async def test_a_list_another_replica_stored_is_enough(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    async with serve(make_settings(), redis_url, providers, clock) as app:
        first = (await app.post(action="services")).json()
    providers["prov-b"].fail_always("services", Unreachable())
    async with serve(make_settings(), redis_url, providers, clock) as app:
        r = await app.post(action="services")
        assert r.status_code == 200
        assert r.json() == first
        assert (await app.http.get("/readyz")).status_code == 200


async def test_a_refresh_another_replica_stored_while_this_one_waited_is_not_fetched_again(
        redis_url: str, providers: dict[str, FakeProvider], clock: ManualClock) -> None:
    """Two replicas find a list due at once; one takes the lock, fetches and stores it.
    The other gets the lock after that and must take the stored list, not fetch it again
    (it held the lock only until the fetch, and never looked again: two fetches)."""
    settings = make_settings(catalog_ttl_s=60)
    async with serve(settings, redis_url, providers, clock) as one, \
            serve(settings, redis_url, providers, clock) as two:
        clock.advance(200)  # past the TTL and its jitter, for both
        before = providers["prov-a"].calls["services"]
        one.in_app(one.resources.catalog.sync)  # fetches and stores prov-a's list
        assert providers["prov-a"].calls["services"] == before + 1
        stored = one.resources.catalog.fetched_at("prov-a")
        # `two` judged it due before that was stored, and now has the lock
        assert two.in_app(two.resources.catalog._refresh, "prov-a") is True
        assert providers["prov-a"].calls["services"] == before + 1
        assert two.resources.catalog.fetched_at("prov-a") == stored
