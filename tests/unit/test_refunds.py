"""The refund rule (`gateway.money.refund`) with literal amounts: never more than the
charge for what was not delivered."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.money import refund


@pytest.mark.parametrize(("status", "remains", "total", "back"), [
    ("Partial", "500", 1000, "1.50000"),  # half undelivered: half back
    ("Partial", "1000", 1000, "3.00000"),  # nothing delivered
    ("Partial", "0", 1000, "0"),
    ("Partial", "-5", 1000, "0"),
    ("Partial", "Unknown", 1000, "0"),
    ("Partial", "NaN", 1000, "0"),
    ("Partial", None, 1000, "0"),
    ("Canceled", "1000", 1000, "3.00"),
    ("Refunded", None, 1000, "3.00"),
    ("Completed", "0", 1000, "0"),
    ("In progress", "400", 1000, "0"),
])
def test_refunds_follow_what_was_not_delivered(status: str, remains: str | None, total: int,
                                               back: str) -> None:
    assert refund(Decimal("3.00"), status, remains, total) == Decimal(back)


def test_remains_beyond_the_order_refund_nothing() -> None:
    """Issue 20: 10 charged (0.03), 1,000 sent upstream, Partial with 500 remaining:
    the old rule clamped 500 to 10 and gave the whole charge back."""
    assert refund(Decimal("0.03"), "Partial", "500", 10) == Decimal(0)
    assert refund(Decimal("0.03"), "Partial", "11", 10) == Decimal(0)
    assert refund(Decimal("0.03"), "Partial", "10", 10) == Decimal("0.03000")
