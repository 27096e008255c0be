"""`catalog suggest`'s grouping (`gateway.ops.suggest.group`): what must be grouped,
and what must stay apart (quantity ranges that do not meet, refill that differs,
another platform or metric, a single provider)."""

from __future__ import annotations

from decimal import Decimal

from gateway.config import GatewaySettings
from gateway.models import UpstreamService
from gateway.money import Converter
from gateway.ops.suggest import group

CONVERT = Converter(GatewaySettings(currency="USD", rates={"EUR": Decimal("2")}))


def svc(service: str, name: str, rate: str, lo: int, hi: int,
        refill: bool = False) -> UpstreamService:
    return UpstreamService(service=service, name=name, type="Default", category="",
                           rate=Decimal(rate), min=lo, max=hi, refill=refill)


def grouped(lists: dict[str, list[UpstreamService]],
            currencies: dict[str, str] | None = None) -> list[list[tuple[str, str, str]]]:
    found = group(lists, CONVERT, currencies or dict.fromkeys(lists, "USD"))
    return [[(m.provider, m.service.service, str(m.cost)) for m in members]
            for _, members in found]


def test_overlapping_ranges_are_grouped_cheapest_first() -> None:
    assert grouped({
        "a": [svc("1", "Instagram Followers", "1.20", 100, 10000)],
        "b": [svc("7", "IG followers fast", "0.90", 50, 200)],
    }) == [[("b", "7", "0.90"), ("a", "1", "1.20")]]


def test_ranges_that_only_touch_are_grouped() -> None:
    assert grouped({
        "a": [svc("1", "TikTok Likes", "1.00", 10, 100)],
        "b": [svc("2", "TikTok Likes", "2.00", 100, 500)],
        "c": [svc("3", "TikTok Likes", "3.00", 1, 10)],
    }) == [[("a", "1", "1.00"), ("b", "2", "2.00"), ("c", "3", "3.00")]]


def test_ranges_that_do_not_meet_stay_apart() -> None:
    """An order that fits the cheapest must fit every member: b starts above a's
    max and c ends below a's min, so neither joins, and a alone is no group."""
    assert grouped({
        "a": [svc("1", "TikTok Likes", "1.00", 10, 100)],
        "b": [svc("2", "TikTok Likes", "2.00", 101, 500)],
        "c": [svc("3", "TikTok Likes", "3.00", 1, 9)],
    }) == []


def test_a_member_apart_is_left_out_of_a_group_that_stands() -> None:
    assert grouped({
        "a": [svc("1", "YouTube Views", "0.10", 1000, 5000)],
        "b": [svc("2", "YouTube Views", "0.20", 6000, 9000)],
        "c": [svc("3", "YouTube Views", "0.30", 100, 1000)],
    }) == [[("a", "1", "0.10"), ("c", "3", "0.30")]]


def test_refill_platform_metric_and_a_single_provider_keep_services_apart() -> None:
    assert grouped({
        "a": [svc("1", "Instagram Likes", "1.00", 10, 1000, refill=True),
              svc("2", "Instagram Likes", "1.10", 10, 1000),
              svc("3", "Instagram Views", "0.10", 10, 1000)],
        "b": [svc("4", "Instagram Likes", "1.50", 10, 1000, refill=False),
              svc("5", "TikTok Views", "0.10", 10, 1000),
              svc("6", "Telegram Members", "0.10", 10, 1000),
              svc("7", "Telegram Members", "0.20", 10, 1000)],
    }) == [[("a", "2", "1.10"), ("b", "4", "1.50")]]


def test_costs_are_compared_in_the_gateway_currency() -> None:
    assert grouped({
        "eu": [svc("1", "Twitch Followers", "0.60", 10, 100)],  # 1.20 USD
        "us": [svc("2", "Twitch Followers", "1.00", 10, 100)],
    }, {"eu": "EUR", "us": "USD"}) == [[("us", "2", "1.00"), ("eu", "1", "1.20")]]
