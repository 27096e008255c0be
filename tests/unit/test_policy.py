"""Routing policies (issue 12): `best_value`, `fastest`, `min_success`, `explore_share`
order an add's candidates by what their scorecards say; `cheapest` is unchanged and
reads no scorecard. Scorecards are filled through the real `Scores` API over a real
Redis; adds go through the real `add` action.

Services (conftest): 1 Followers: prov-a #1 0.50 before prov-b #11 0.80; the gateway's
markup 1.5 advertises 0.75.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.admin.explain import service_rows
from gateway.config import parse_settings
from gateway.errors import ClientError
from gateway.money import wire
from gateway.ops.explain import route, show
from gateway.routing import decide
from gateway.state.scores import Evidence
from inprocess import State, config_text

pytestmark = pytest.mark.anyio
UNAVAILABLE = "Service is temporarily unavailable, try again later"


async def evidence(state: State, provider: str, service: str, n: float, *,
                   completed: float = 1.0, delivered_partial: float = 0.5,
                   complete_s: float = 3600, start_s: float = 60, **more: float) -> None:
    """`n` ended orders at a provider service: `completed` of them Completed (after
    `complete_s`), the rest Partial delivering `delivered_partial`."""
    done, partial = n * completed, n * (1 - completed)
    ev = Evidence()
    ev.add(provider, service, o=n, ns=n, ss=n * start_s, nf=n, fc=done, fp=partial,
           dl=done + partial * delivered_partial, nd=done, sd=done * complete_s, **more)
    await state.r.scores.add(ev)


async def order_of(state: State, service: int = 1, quantity: int = 100) -> list[str]:
    """The providers in the order an add would try them, and only the usable ones."""
    view = state.r.catalog.views[service]
    weighing = await state.r.weigher.weigh(view, explore=False)
    return [ch.candidate.provider
            for ch in decide.choices(view, quantity, None, state.r.balances, weighing=weighing)
            if ch.reason is None]


async def placed_at(state: State, **fields: Any) -> str:
    _, record = await state.add(service=1, link="https://t.co/x", quantity=100, **fields)
    return record.provider


async def half_and_whole(state: State, n: float) -> None:
    await evidence(state, "prov-a", "1", n, completed=0.0, delivered_partial=0.5)
    await evidence(state, "prov-b", "11", n, completed=1.0)


@pytest.mark.gateway(policy="best_value", min_evidence=20, policy_cache_s=0)
async def test_best_value_moves_to_the_dearer_complete_provider_on_enough_evidence(
        state: State) -> None:
    await half_and_whole(state, 19)  # not yet: the neutral prior, cheapest first
    assert await order_of(state) == ["prov-a", "prov-b"]
    assert await placed_at(state) == "prov-a"

    await half_and_whole(state, 1)  # n 20: 0.50 / 50 % = 1.00 per 1000 delivered > 0.80
    assert await order_of(state) == ["prov-b", "prov-a"]
    assert await placed_at(state) == "prov-b"
    lines = await route(state.r, 1, 100, None)
    text = "\n".join(lines)
    assert "policy best_value, min_evidence 20" in text
    assert "best_value: 1.00000 per 1000 delivered (delivered 50%" in text
    assert "best_value: 0.80000 per 1000 delivered (delivered 100%" in text
    assert [line.split()[0] for line in lines if "TAKEN" in line] == ["prov-b"]


@pytest.mark.gateway(policy="best_value", min_evidence=20, policy_cache_s=0,
                     slow_start_after_s=3600, slow_start_penalty=0.1,
                     refill_refusal_penalty=0.5)
async def test_best_value_penalties_for_slow_starts_and_refused_refills(state: State) -> None:
    await evidence(state, "prov-a", "1", 20, start_s=3600 + 5 * 3600)  # +50 %: 0.75
    await evidence(state, "prov-b", "11", 20)
    assert await order_of(state) == ["prov-a", "prov-b"]  # 0.75 < 0.80
    await evidence(state, "prov-a", "1", 0, rr=4, rq=0)  # every refill refused: x 1.5
    assert await order_of(state) == ["prov-b", "prov-a"]  # 1.125 > 0.80
    view = state.r.catalog.views[1]
    judged = [ch.judged for ch in decide.choices(
        view, 100, None, state.r.balances, weighing=await state.r.weigher.weigh(view))]
    assert [wire(j.per_delivered) for j in judged if j] == ["0.80000", "1.12500"]


@pytest.mark.gateway(policy="fastest", min_evidence=20, policy_cache_s=0,
                     fastest_max_factor=2)
async def test_fastest_takes_the_quickest_within_the_cap(state: State) -> None:
    assert await order_of(state) == ["prov-a", "prov-b"]  # no evidence: cheapest first
    await evidence(state, "prov-a", "1", 20, complete_s=10 * 3600)
    await evidence(state, "prov-b", "11", 20, complete_s=3600)
    assert await order_of(state) == ["prov-b", "prov-a"]
    assert await placed_at(state) == "prov-b"
    assert "fastest: expected 1h to complete" in "\n".join(await route(state.r, 1, 100, None))


@pytest.mark.gateway(policy="fastest", min_evidence=20, policy_cache_s=0)
async def test_fastest_skips_what_is_over_its_cap(state: State) -> None:
    await evidence(state, "prov-a", "1", 20, complete_s=10 * 3600)
    await evidence(state, "prov-b", "11", 20, complete_s=3600)
    lines = await route(state.r, 1, 100, None)  # cap 0.50 x 1.5 = 0.75 < 0.80
    assert any(line.endswith("-> skipped: fastest: over the price cap (0.75000)")
               for line in lines)
    assert await placed_at(state) == "prov-a"


@pytest.mark.gateway(min_success=0.8, min_evidence=20, policy_cache_s=0)
async def test_min_success_skips_a_provider_below_the_floor(state: State) -> None:
    await evidence(state, "prov-a", "1", 19, completed=0.5)
    assert await placed_at(state) == "prov-a"  # too little evidence to judge
    await evidence(state, "prov-a", "1", 1, completed=0.5)
    lines = await route(state.r, 1, 100, None)
    assert any(line.endswith("-> skipped: below min_success: completed 50% < 80% (n 20.0)")
               for line in lines)
    assert await placed_at(state) == "prov-b"

    await evidence(state, "prov-b", "11", 20, completed=0.5)  # none left: unavailable
    calls = sum(p.calls["add"] for p in state.providers.values())
    with pytest.raises(ClientError, match=UNAVAILABLE):
        await placed_at(state)
    assert sum(p.calls["add"] for p in state.providers.values()) == calls


@pytest.mark.gateway(explore_share=0.05, min_evidence=20, policy_cache_s=0, markup=2)
async def test_explore_share_sends_about_that_share_to_the_unscored_one(state: State) -> None:
    await evidence(state, "prov-a", "1", 30)  # prov-b has no card; 0.80 < 1.00 sold
    view = state.r.catalog.views[1]
    state.r.weigher.draw = random.Random(12).random
    went = []
    for _ in range(400):
        picked = decide.choices(view, 100, None, state.r.balances,
                                weighing=await state.r.weigher.weigh(view))
        went.append(next(ch.candidate.provider for ch in picked if ch.reason is None))
    explored = went.count("prov-b")
    assert 10 <= explored <= 32  # 400 x 0.05 = 20 (binomial sd 4.4)
    rng = random.Random(12)
    assert explored == sum(rng.random() < 0.05 for _ in range(400))  # exactly the draws

    state.r.weigher.draw = lambda: 0.01  # the draw decides the real add too
    assert await placed_at(state) == "prov-b"
    state.r.weigher.draw = lambda: 0.5
    assert await placed_at(state) == "prov-a"
    assert "explored: 5% of orders go here first" in "\n".join(
        await route(state.r, 1, 100, None))
    [row] = [s for s in await service_rows(state.r) if s.id == 1]
    assert [(r.provider, r.picked, r.explored) for r in row.rows] == [
        ("prov-a", True, False), ("prov-b", False, True)]


@pytest.mark.gateway(explore_share=0.5, min_evidence=20, policy_cache_s=0)
async def test_exploring_keeps_the_margin(state: State) -> None:
    await evidence(state, "prov-a", "1", 30)
    state.r.weigher.draw = lambda: 0.0
    assert await placed_at(state) == "prov-a"  # prov-b's 0.80 is over the 0.75 sold


async def test_cheapest_is_unchanged_and_reads_no_scorecard(state: State) -> None:
    await half_and_whole(state, 50)

    async def no_round_trip(*args: Any) -> Any:
        raise AssertionError("cheapest read a scorecard")

    state.r.scores.scorecards = no_round_trip  # type: ignore[method-assign]
    view = state.r.catalog.views[1]
    assert await state.r.weigher.weigh(view) is None
    assert await order_of(state) == ["prov-a", "prov-b"]
    assert await placed_at(state) == "prov-a"
    assert [ch.judged for ch in decide.choices(view, 100, None, state.r.balances)] == [None] * 2


@pytest.mark.gateway(policy="best_value", min_evidence=20, policy_cache_s=5)
async def test_scorecards_are_reused_for_the_cache_time(state: State) -> None:
    reads = 0
    real = state.r.scores.scorecards

    async def counted(which: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real(which)

    state.r.scores.scorecards = counted  # type: ignore[method-assign]
    assert await order_of(state) == ["prov-a", "prov-b"]
    await half_and_whole(state, 21)  # (21: decay takes a little over the next 5 s)
    assert await order_of(state) == ["prov-a", "prov-b"]  # still the cards of 0 s ago
    assert reads == 1
    state.clock.advance(5)
    assert await order_of(state) == ["prov-b", "prov-a"]
    assert reads == 2


@pytest.mark.gateway(policy="best_value", min_evidence=20)
async def test_catalog_show_and_the_admin_rows_explain_the_policy(state: State) -> None:
    await half_and_whole(state, 20)
    text = "\n".join(await show(state.r))
    assert "policy best_value, min_evidence 20" in text
    assert "best_value: 1.00000/1000 delivered" in text
    [row] = [s for s in await service_rows(state.r) if s.id == 1]
    assert row.policy.startswith("policy best_value")
    assert row.pick is not None and row.pick.provider == "prov-b"
    judged = {r.provider: r.judged for r in row.rows}
    assert judged["prov-a"] is not None and judged["prov-a"].as_json()["delivered"] == 0.5


@pytest.mark.parametrize(("gateway", "service", "message"), [
    ({"explore_share": 1.5}, {}, "explore_share is a share"),
    ({"min_success": 2}, {}, "min_success is a share"),
    ({}, {"min_success": -0.1}, "min_success is a share"),
    ({}, {"max_rate": 0}, "max_rate must be > 0"),
    ({"min_evidence": -1}, {}, "min_evidence must be >= 0"),
    ({"policy": "best-value"}, {}, "best-value"),
    ({}, {"policy": "quickest"}, "quickest"),
])
def test_policy_settings_are_checked(gateway: dict[str, Any], service: dict[str, Any],
                                     message: str) -> None:
    import yaml

    config = yaml.safe_load(config_text(**gateway))
    config["services"][0].update(service)
    with pytest.raises(Exception, match=message):
        parse_settings(yaml.safe_dump(config), env={})


def test_a_service_policy_wins_over_the_gateway_default() -> None:
    import yaml

    from gateway.routing.policy import resolve

    config = yaml.safe_load(config_text(policy="best_value", explore_share=0.05))
    config["services"][0].update({"policy": "fastest", "max_rate": "0.9",
                                  "explore_share": 0})
    s = parse_settings(yaml.safe_dump(config), env={})
    first, second = (resolve(svc, s.gateway) for svc in s.services[:2])
    assert (first.name, str(first.max_rate), first.explore_share) == ("fastest", "0.9", 0)
    assert (second.name, second.explore_share) == ("best_value", 0.05)
