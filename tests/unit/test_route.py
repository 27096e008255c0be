"""`route` (the operator's explanation) and `add` agree on every skip reason.

`route` asks `decide.verdicts(..., take=False)`, `add` asks it with `take=True`.
For each state below, both are asked on the same Redis state and must give the
same (provider, reason, probe) list, which is also the list written here by
hand; `route`'s lines name each reason; and a real `add` goes to the candidate
`route` marks TAKEN (or, when `route` says none can, is refused without a call).

Services (conftest): 1 Followers: prov-a #1 0.50 (10..1000, no drip-feed) before
prov-b #11 0.80 (10..5000, drip-feed); 3 Views at a fixed 0.05: prov-a #3 0.04,
prov-b #13 0.06 (over price).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.errors import ClientError
from gateway.ops.explain import route
from gateway.routing import decide
from gateway.state.balances import KnownBalances
from gateway.state.breakers import PROBE_TTL_MS
from inprocess import State

pytestmark = pytest.mark.anyio

COOLDOWN = 30
MIN_REQUESTS = 3
UNAVAILABLE = "Service is temporarily unavailable, try again later"

Row = tuple[str, str | None, bool]  # provider, reason, probe


async def nothing(state: State) -> None:
    return None


async def low_balance(state: State) -> None:
    await KnownBalances(state.r.redis).put("prov-a", "0.01", "USD", state.clock.time())
    await state.r.balances.load("prov-a")


async def provider_open(state: State) -> None:
    for _ in range(MIN_REQUESTS):
        await state.r.breakers.failure("prov-a")


async def service_open(state: State) -> None:
    for _ in range(MIN_REQUESTS):
        await state.r.breakers.failure("prov-a", "1")


async def probe_due(state: State) -> None:
    await provider_open(state)
    state.clock.advance(COOLDOWN)


async def probe_out(state: State) -> None:
    await probe_due(state)
    gate = await state.r.breakers.allow("prov-a", "1", take=True)  # another replica's probe
    assert gate.probe


async def probe_lost(state: State) -> None:
    await probe_out(state)
    state.clock.advance(PROBE_TTL_MS / 1000)  # the probe never reported: replaced


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[State], Awaitable[None]]
    expected: list[Row]
    service: int = 1
    quantity: int = 100
    runs: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("quantity out of range", nothing,
         [("prov-a", "quantity out of range (10..1000)", False), ("prov-b", None, False)],
         quantity=2000),
    Case("feature missing: drip-feed", nothing,
         [("prov-a", "feature missing: drip-feed", False), ("prov-b", None, False)],
         runs=3, fields={"interval": 10}),
    Case("over price", nothing,
         [("prov-a", None, False), ("prov-b", "over price", False)],
         service=3, quantity=1000),
    Case("balance too low", low_balance,
         [("prov-a", "balance too low (last known 0.01000)", False), ("prov-b", None, False)]),
    Case("provider breaker open", provider_open,
         [("prov-a", "breaker open", False), ("prov-b", None, False)]),
    Case("service breaker open", service_open,
         [("prov-a", "breaker open (service)", False), ("prov-b", None, False)]),
    Case("open, cooldown over: probe due", probe_due,
         [("prov-a", None, True), ("prov-b", None, False)]),
    Case("half-open, a probe is out", probe_out,
         [("prov-a", "breaker half-open, a probe is out", False), ("prov-b", None, False)]),
    Case("half-open, the probe never reported", probe_lost,
         [("prov-a", None, True), ("prov-b", None, False)]),
    Case("breaker open and the rest over price", provider_open,
         [("prov-a", "breaker open", False), ("prov-b", "over price", False)],
         service=3, quantity=1000),
]


async def rows(state: State, case: Case, take: bool) -> list[Row]:
    view = state.r.catalog.views[case.service]
    picked = decide.choices(view, case.quantity, case.runs, state.r.balances)
    return [(v.candidate.provider, v.reason, v.probe)
            async for v in decide.verdicts(picked, state.r.breakers, take=take)]


def taken(lines: list[str]) -> str | None:
    """The provider of the line `route` marks TAKEN."""
    marked = [line.split()[0] for line in lines if "TAKEN" in line]
    assert len(marked) <= 1
    return marked[0] if marked else None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_route_and_add_see_the_same_reasons(state: State, case: Case) -> None:
    await case.setup(state)
    lines = await route(state.r, case.service, case.quantity, case.runs)
    looked = await rows(state, case, take=False)
    took = await rows(state, case, take=True)  # what add sees, on the same state

    assert looked == case.expected
    assert took == looked
    for provider, reason, _ in case.expected:
        [line] = [x for x in lines if x.strip().startswith(f"{provider} #")]
        if reason is None:
            assert "skipped" not in line
        else:
            assert line.endswith(f"-> skipped: {reason}")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_add_goes_where_route_says(state: State, case: Case) -> None:
    await case.setup(state)
    lines = await route(state.r, case.service, case.quantity, case.runs)
    expected = taken(lines)
    fields = {"service": case.service, "link": "https://t.co/x", "quantity": case.quantity,
              **({"runs": case.runs} if case.runs else {}), **case.fields}

    if expected is None:
        assert lines[-1].strip().startswith("no candidate can take it")
        with pytest.raises(ClientError, match=UNAVAILABLE):
            await state.add(**fields)
        assert sum(p.calls["add"] for p in state.providers.values()) == 0
        return
    _, record = await state.add(**fields)
    assert (record.provider, record.state) == (expected, "placed")
    assert {name: p.calls["add"] for name, p in state.providers.items()} == {
        name: int(name == expected) for name in state.providers}
