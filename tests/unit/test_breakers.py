"""Circuit breakers on the clock: provider-blamed failures open a provider's breaker,
`add` then skips it; after the cooldown exactly one `add` is the probe, and its
success closes the breaker.

Run in the test's own loop (`state`), so a probe can be held in flight while
other orders arrive. Settings: breaker_min_requests 3, threshold 0.5, cooldown 30.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import ClientError
from inprocess import State
from upstream import Reject

pytestmark = pytest.mark.anyio

MAINTENANCE = Reject("API is under maintenance")  # the provider's fault, worth trying elsewhere
COOLDOWN = 30


async def add(state: State, quantity: int = 100) -> str:
    """Place an order for service 1 (prov-a cheaper, prov-b dearer); who took it."""
    _, record = await state.add(service=1, link="https://t.co/x", quantity=quantity)
    assert record.state == "placed"
    return record.provider


async def open_prov_a(state: State) -> None:
    a = state.providers["prov-a"]
    a.fail_always("add", MAINTENANCE)
    assert [await add(state) for _ in range(3)] == ["prov-b"] * 3
    assert a.calls["add"] == 3
    a.fail_always("add", None)


async def test_provider_failures_below_min_requests_keep_it_closed(state: State) -> None:
    state.providers["prov-a"].fail("add", MAINTENANCE, MAINTENANCE)
    assert [await add(state) for _ in range(2)] == ["prov-b", "prov-b"]
    assert await state.r.breakers.state("prov-a") == "closed"
    assert await add(state) == "prov-a"


async def test_open_provider_is_skipped_without_a_call(state: State) -> None:
    await open_prov_a(state)
    assert await state.r.breakers.state("prov-a") == "open"
    assert [await add(state) for _ in range(3)] == ["prov-b"] * 3
    assert state.providers["prov-a"].calls["add"] == 3


async def test_still_open_just_before_the_cooldown(state: State) -> None:
    await open_prov_a(state)
    state.clock.advance(COOLDOWN - 1)
    assert await add(state) == "prov-b"
    assert state.providers["prov-a"].calls["add"] == 3


async def test_one_probe_after_the_cooldown_and_its_success_closes(state: State) -> None:
    a = state.providers["prov-a"]
    await open_prov_a(state)
    state.clock.advance(COOLDOWN)

    hold = a.hold("add")
    probe = asyncio.create_task(add(state))
    await hold.entered.wait()
    assert await state.r.breakers.state("prov-a") == "half"
    # while the probe is out, other orders do not probe too
    assert [await add(state) for _ in range(2)] == ["prov-b", "prov-b"]
    assert a.calls["add"] == 4
    hold.release.set()
    assert await probe == "prov-a"

    assert await state.r.breakers.state("prov-a") == "closed"
    assert await add(state) == "prov-a"
    assert a.calls["add"] == 5


async def test_failed_probe_opens_it_for_another_cooldown(state: State) -> None:
    a = state.providers["prov-a"]
    await open_prov_a(state)
    state.clock.advance(COOLDOWN)
    a.fail("add", MAINTENANCE)
    assert await add(state) == "prov-b"  # the probe failed, the order went on
    assert a.calls["add"] == 4
    assert await state.r.breakers.state("prov-a") == "open"

    state.clock.advance(COOLDOWN - 1)
    assert await add(state) == "prov-b"
    assert a.calls["add"] == 4
    state.clock.advance(1)
    assert await add(state) == "prov-a"
    assert await state.r.breakers.state("prov-a") == "closed"


async def test_service_failure_opens_only_that_service(state: State) -> None:
    a = state.providers["prov-a"]
    a.fail_always("add", Reject("Service disabled"))
    assert [await add(state) for _ in range(3)] == ["prov-b"] * 3
    a.fail_always("add", None)
    assert await state.r.breakers.state("prov-a", "1") == "open"
    assert await state.r.breakers.state("prov-a") == "closed"
    assert await add(state) == "prov-b"
    _, likes = await state.add(service=2, link="https://t.co/y", quantity=100)
    assert likes.provider == "prov-a"


async def test_client_mistakes_do_not_count_against_the_provider(state: State) -> None:
    a = state.providers["prov-a"]
    a.fail_always("add", Reject("Incorrect link"))
    for _ in range(5):
        with pytest.raises(ClientError, match="Incorrect link"):
            await add(state)
    assert await state.r.breakers.state("prov-a") == "closed"
    assert await state.r.breakers.state("prov-a", "1") == "closed"
