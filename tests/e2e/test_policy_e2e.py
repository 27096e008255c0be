"""Routing policies over HTTP (issue 12): `best_value` moves orders from a cheap provider
that delivers half to a dearer one that completes, once the scorecards hold enough
evidence, and not before. Real gateway process, real Redis, two simulators whose
clocks the test moves (no sleeping for orders to run).

prov-b (testedsmm #11, 0.40) is the cheap one: every order ends Partial, half
delivered (0.40 / 50 % = 0.80 per 1000 delivered); prov-a (toksmm #1, 0.50) completes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Gateway, Sim, base_config

MIN_EVIDENCE = 5


@pytest.fixture
def stack(sims: tuple[Sim, Sim], fresh_redis: str,
          tmp_path: Path) -> Iterator[tuple[Gateway, Sim, Sim]]:
    a, b = sims
    a.reset()
    b.reset()
    b.control("behaviour", {"service": 11, "partial_rate": 1, "delivered_share": 0.5})
    config = base_config(a, b, policy="best_value", min_evidence=MIN_EVIDENCE,
                         policy_cache_s=0)
    gw = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        yield gw, a, b
    finally:
        gw.stop()


def add(gw: Gateway, n: int) -> str:
    answer = gw.call(action="add", service=1, link=f"https://tiktok.com/@u{n}", quantity=100)
    assert "order" in answer, answer
    return str(answer["order"])


def run_to_the_end(gw: Gateway, sims: tuple[Sim, Sim], orders: list[str]) -> dict[str, str]:
    """Move the simulators' clocks past every order's end, then poll them as a panel
    would: the statuses the gateway's scorecards learn from."""
    for sim in sims:
        sim.control("clock", {"advance_s": 3 * 3600})
    answer = gw.call(action="status", orders=",".join(orders))
    return {order: answer[order]["status"] for order in orders}


def test_best_value_moves_to_the_provider_that_delivers(stack):
    gw, a, b = stack
    first = [add(gw, i) for i in range(MIN_EVIDENCE)]
    assert (len(b.orders()), len(a.orders())) == (MIN_EVIDENCE, 0)  # no evidence: cheapest
    gw.call(action="status", orders=",".join(first))  # seen Pending

    ended = run_to_the_end(gw, (a, b), first[:-1])
    assert set(ended.values()) == {"Partial"}
    add(gw, 100)  # n 4 < 5: still the cheapest
    assert (len(b.orders()), len(a.orders())) == (MIN_EVIDENCE + 1, 0)

    run_to_the_end(gw, (a, b), first[-1:])  # n 5: 0.80 per 1000 delivered > 0.50
    for i in range(3):
        add(gw, 200 + i)
    assert (len(b.orders()), len(a.orders())) == (MIN_EVIDENCE + 1, 3)
    assert {o["status"] for o in b.orders()[:MIN_EVIDENCE]} == {"Partial"}


def test_exploring_sends_about_the_share_to_the_unscored_provider(sims, fresh_redis, tmp_path):
    a, b = sims
    a.reset()
    b.reset()  # both complete; prov-b is the cheapest and earns a score first
    config = base_config(a, b, min_evidence=MIN_EVIDENCE, explore_share=0.25,
                         policy_cache_s=0)
    gw = Gateway(config, fresh_redis, tmp_path / "gw")
    try:
        scored = [add(gw, i) for i in range(MIN_EVIDENCE)]
        assert len(b.orders()) == MIN_EVIDENCE  # everyone unscored: the cheapest
        gw.call(action="status", orders=",".join(scored))
        assert set(run_to_the_end(gw, (a, b), scored).values()) == {"Completed"}
        before = len(b.orders())
        for i in range(200):
            add(gw, 1000 + i)
        explored = len(a.orders())
        assert explored + len(b.orders()) - before == 200
        assert 25 <= explored <= 80, explored  # 200 x 0.25 = 50 (binomial sd 6.1)
    finally:
        gw.stop()
