"""Decision tables for price routing: `router.plan()`, `usable()` and `family()`.

The router is pure, so every rule is a row: a candidate, an order's needs, and the
reason it is skipped (None: usable).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway.models import UpstreamService
from gateway.routing.plan import Candidate, Choice, Needs, family, plan, usable


def upstream(sid: str = "1", type: str = "Default", min: int = 10, max: int = 1000,
             refill: bool | None = None, cancel: bool | None = None,
             dripfeed: bool | None = None, rate: str = "1") -> UpstreamService:
    return UpstreamService(service=sid, name=f"Service {sid}", type=type, category="TikTok",
                           rate=Decimal(rate), min=min, max=max, refill=refill,
                           cancel=cancel, dripfeed=dripfeed)


def cand(provider: str = "p", cost: str = "1", **kw: Any) -> Candidate:
    return Candidate(provider, upstream(**kw), Decimal(cost))


def needs(quantity: int = 100, runs: int | None = None, family: str = "default",
          features: tuple[str, ...] = (), max_rate: str | None = None,
          dripfeed_trusted: bool = False) -> Needs:
    return Needs(quantity=quantity, runs=runs, family=family, features=features,
                 max_rate=Decimal(max_rate) if max_rate is not None else None,
                 dripfeed_trusted=dripfeed_trusted)


OUT_OF_RANGE = "quantity out of range (10..1000)"
NO_DRIPFEED = "feature missing: drip-feed"

# (upstream fields, needs fields, candidate cost, expected reason)
DECISIONS: list[tuple[str, dict[str, Any], dict[str, Any], str, str | None]] = [
    # quantity range, inclusive at both ends; drip-feed quantity is per run
    ("in range", {}, {"quantity": 100}, "1", None),
    ("at min", {}, {"quantity": 10}, "1", None),
    ("at max", {}, {"quantity": 1000}, "1", None),
    ("below min", {}, {"quantity": 9}, "1", OUT_OF_RANGE),
    ("above max", {}, {"quantity": 1001}, "1", OUT_OF_RANGE),
    ("zero", {}, {"quantity": 0}, "1", OUT_OF_RANGE),
    ("min == max", {"min": 1, "max": 1}, {"quantity": 1}, "1", None),
    ("per-run quantity checked, not the total",
     {"dripfeed": True}, {"quantity": 500, "runs": 10}, "1", None),
    ("per-run quantity above max",
     {"dripfeed": True}, {"quantity": 1001, "runs": 2}, "1", OUT_OF_RANGE),
    # drip-feed
    ("drip-feed offered", {"dripfeed": True}, {"runs": 5}, "1", None),
    ("drip-feed refused", {"dripfeed": False}, {"runs": 5}, "1", NO_DRIPFEED),
    ("drip-feed unknown, not trusted", {"dripfeed": None}, {"runs": 5}, "1", NO_DRIPFEED),
    ("drip-feed unknown, operator vouches",
     {"dripfeed": None}, {"runs": 5, "dripfeed_trusted": True}, "1", None),
    ("drip-feed refused, operator vouching does not override",
     {"dripfeed": False}, {"runs": 5, "dripfeed_trusted": True}, "1", NO_DRIPFEED),
    ("no runs: drip-feed flag irrelevant", {"dripfeed": False}, {"runs": None}, "1", None),
    ("runs 0 is no drip-feed", {"dripfeed": False}, {"runs": 0}, "1", None),
    # promised features: only a definite False skips; None (not published) passes
    ("refill promised, upstream refills", {"refill": True}, {"features": ("refill",)}, "1", None),
    ("refill promised, upstream says no",
     {"refill": False}, {"features": ("refill",)}, "1", "feature missing: refill"),
    ("refill promised, upstream silent", {"refill": None}, {"features": ("refill",)}, "1", None),
    ("cancel promised, upstream says no",
     {"cancel": False}, {"features": ("cancel",)}, "1", "feature missing: cancel"),
    ("cancel promised, upstream silent", {"cancel": None}, {"features": ("cancel",)}, "1", None),
    ("not promised: upstream's False does not matter",
     {"refill": False, "cancel": False}, {"features": ()}, "1", None),
    ("both promised, first missing one named",
     {"refill": False, "cancel": False}, {"features": ("refill", "cancel")}, "1",
     "feature missing: refill"),
    ("both promised, only cancel missing",
     {"refill": True, "cancel": False}, {"features": ("refill", "cancel")}, "1",
     "feature missing: cancel"),
    # fixed price: never route above it
    ("under fixed price", {}, {"max_rate": "0.50"}, "0.49999", None),
    ("at fixed price", {}, {"max_rate": "0.50"}, "0.50000", None),
    ("over fixed price", {}, {"max_rate": "0.50"}, "0.50001", "over price"),
    ("no fixed price: any cost", {}, {"max_rate": None}, "1234567.89", None),
    # type families
    ("default takes default", {"type": "Default"}, {"family": "default"}, "1", None),
    ("comments take Custom Comments",
     {"type": "Custom Comments"}, {"family": "comments"}, "1", None),
    ("comments take snake_case custom_comments",
     {"type": "custom_comments"}, {"family": "comments"}, "1", None),
    ("default order, comments upstream",
     {"type": "Custom Comments"}, {"family": "default"}, "1",
     "type 'Custom Comments' does not take this order's parameters"),
    ("comments order, default upstream",
     {"type": "Default"}, {"family": "comments"}, "1",
     "type 'Default' does not take this order's parameters"),
    ("package order, poll upstream",
     {"type": "Poll"}, {"family": "package"}, "1",
     "type 'Poll' does not take this order's parameters"),
    # several problems: the first rule in order wins
    ("family before quantity",
     {"type": "Poll"}, {"quantity": 1}, "1",
     "type 'Poll' does not take this order's parameters"),
    ("quantity before drip-feed",
     {"dripfeed": False}, {"quantity": 5000, "runs": 2}, "1", OUT_OF_RANGE),
    ("drip-feed before features",
     {"dripfeed": False, "refill": False}, {"runs": 2, "features": ("refill",)}, "1",
     NO_DRIPFEED),
    ("features before price",
     {"refill": False}, {"features": ("refill",), "max_rate": "0.1"}, "1",
     "feature missing: refill"),
]


@pytest.mark.parametrize(("upstream_kw", "needs_kw", "cost", "reason"),
                         [row[1:] for row in DECISIONS], ids=[row[0] for row in DECISIONS])
def test_decision_table(upstream_kw: dict[str, Any], needs_kw: dict[str, Any], cost: str,
                        reason: str | None) -> None:
    c = cand(cost=cost, **upstream_kw)
    [choice] = plan([c], needs(**needs_kw))
    assert choice == Choice(c, reason)
    assert usable([choice]) == ([c] if reason is None else [])


def test_cheapest_first_whatever_the_input_order() -> None:
    mid, cheap, dear = cand("mid", "0.50"), cand("cheap", "0.10"), cand("dear", "2")
    choices = plan([mid, dear, cheap], needs())
    assert [ch.candidate.provider for ch in choices] == ["cheap", "mid", "dear"]
    assert usable(choices) == [cheap, mid, dear]


def test_skipped_candidates_stay_in_the_plan_with_their_reason() -> None:
    cheap_small = cand("cheap", "0.10", max=50)
    mid = cand("mid", "0.50")
    dear_no_refill = cand("dear", "0.90", refill=False)
    over = cand("over", "3")
    choices = plan([over, dear_no_refill, mid, cheap_small],
                   needs(quantity=100, features=("refill",), max_rate="1"))
    assert [(ch.candidate.provider, ch.reason) for ch in choices] == [
        ("cheap", "quantity out of range (10..50)"),
        ("mid", None),
        ("dear", "feature missing: refill"),
        ("over", "over price"),
    ]
    assert usable(choices) == [mid]


def test_cheapest_skipped_falls_through_to_the_next() -> None:
    a = cand("a", "0.1", dripfeed=False)
    b = cand("b", "0.2", dripfeed=True)
    c = cand("c", "0.3", dripfeed=None)
    assert usable(plan([c, b, a], needs(runs=3))) == [b]
    assert usable(plan([c, b, a], needs(runs=3, dripfeed_trusted=True))) == [b, c]


def test_ties_keep_the_input_order() -> None:
    first, second, third = cand("first", "1.0"), cand("second", "1"), cand("third", "1.00")
    assert usable(plan([first, second, third], needs())) == [first, second, third]
    assert usable(plan([third, first, second], needs())) == [third, first, second]


def test_ties_among_others() -> None:
    x, y, z = cand("x", "2"), cand("y", "1"), cand("z", "2")
    assert [c.provider for c in usable(plan([x, y, z], needs()))] == ["y", "x", "z"]


def test_very_large_costs_sort_numerically() -> None:
    big = cand("big", "1500000.5")
    small = cand("small", "999999.99999")
    tiny = cand("tiny", "0.00001")
    assert usable(plan([big, small, tiny], needs())) == [tiny, small, big]


def test_empty_input() -> None:
    assert plan([], needs()) == []
    assert usable([]) == []


def test_nothing_usable() -> None:
    choices = plan([cand("a", "1", max=50), cand("b", "2", refill=False)],
                   needs(quantity=100, features=("refill",)))
    assert len(choices) == 2
    assert all(ch.reason for ch in choices)
    assert usable(choices) == []


def test_plan_takes_any_iterable() -> None:
    a, b = cand("a", "2"), cand("b", "1")
    assert usable(plan(iter([a, b]), needs())) == [b, a]
    assert usable(ch for ch in plan((a, b), needs())) == [b, a]


@pytest.mark.parametrize(("service_type", "expected"), [
    ("Default", "default"),
    ("", "default"),
    ("Custom Comments", "comments"),
    ("custom_comments", "comments"),
    ("Custom Comments Package", "comments"),
    ("Comment Replies", "comments"),
    ("Comment Likes", "default"),
    ("Mentions", "mention"),
    ("Mentions Custom List", "mention"),
    ("Mentions with Hashtags", "mention"),
    ("Mentions User Followers", "mention"),
    ("mentions_hashtag", "mention"),
    ("Poll", "poll"),
    ("Subscriptions", "subscription"),
    ("Package", "package"),
    ("SEO", "seo"),
    ("seo", "seo"),
    ("Dripfeed", "default"),
])
def test_family(service_type: str, expected: str) -> None:
    assert family(service_type) == expected
