"""The money rules (`gateway.money`) against amounts written out by hand: rounding at
the fifth decimal, units in Redis, and refunds at their edges. No expected value is
computed with the function under test."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.config import GatewaySettings
from gateway.money import (
    Converter,
    charge,
    from_units,
    rate_up,
    refund,
    to_units,
    wire,
)


@pytest.mark.parametrize(("amount", "text"), [
    (Decimal("0.5"), "0.50000"),
    (Decimal("0.000005"), "0.00001"),  # half-up, not to even (0.00000) nor down
    (Decimal("0.0000049"), "0.00000"),
    (Decimal("1.234565"), "1.23457"),
    (Decimal("12"), "12.00000"),
])
def test_wire_text_has_five_decimals_rounded_half_up(amount: Decimal, text: str) -> None:
    assert wire(amount) == text


@pytest.mark.parametrize(("cost", "advertised"), [
    ("0.000001", "0.00001"),  # below the fifth decimal: up, never down to 0
    ("1.234561", "1.23457"),
    ("1.23456", "1.23456"),  # already on the grid: unchanged
    ("0.00000", "0.00000"),
])
def test_advertised_rates_round_up(cost: str, advertised: str) -> None:
    assert str(rate_up(Decimal(cost))) == advertised


@pytest.mark.parametrize(("rate", "quantity", "runs", "price"), [
    ("1.5", 1000, None, "1.50000"),
    ("0.01", 1, None, "0.00001"),
    ("0.005", 1, None, "0.00001"),  # 0.000005: half-up (floor would charge 0)
    ("0.0049", 1, None, "0.00000"),  # 0.0000049: down
    ("0.015", 1, None, "0.00002"),  # 0.000015: half-up, not half-even (0.00002 either way)
    ("0.025", 1, None, "0.00003"),  # 0.000025: half-even would give 0.00002
    ("2", 500, 3, "3.00000"),  # drip-feed: quantity x runs
    ("2", 500, None, "1.00000"),
    ("2", 500, 0, "1.00000"),  # no runs is one run
    ("0.12345", 7, None, "0.00086"),  # 0.00086415
])
def test_charge_is_rate_per_thousand_rounded_half_up(rate: str, quantity: int,
                                                     runs: int | None, price: str) -> None:
    assert str(charge(Decimal(rate), quantity, runs)) == price


def test_the_converter_knows_its_own_currency_and_its_rates() -> None:
    convert = Converter(GatewaySettings(currency="USD", rates={"EUR": Decimal("1.1")}))
    assert convert.currency == "USD"
    assert convert.knows("USD") and convert.knows("EUR")
    assert not convert.knows("GBP")
    assert convert.to_gateway(Decimal("10"), "EUR") == Decimal("11.0")
    assert convert.to_gateway(Decimal("10"), "USD") == Decimal("10")


@pytest.mark.parametrize(("amount", "units"), [
    ("1.5", 150000),
    ("0.00001", 1),
    ("0.000005", 1),  # half-up
    ("0.0000049", 0),
    ("-0.000005", -1),  # half-up is away from zero
    ("-2.25", -225000),
])
def test_amounts_become_integer_units_of_the_fifth_decimal(amount: str, units: int) -> None:
    assert to_units(Decimal(amount)) == units


@pytest.mark.parametrize(("units", "amount"), [
    (150000, "1.50000"), ("1", "0.00001"), (b"-7", "-0.00007"), (0, "0.00000"),
])
def test_units_read_back_as_five_decimal_amounts(units: int | str | bytes, amount: str) -> None:
    assert str(from_units(units)) == amount


@pytest.mark.parametrize(("paid", "status", "remains", "total", "back"), [
    ("0.00003", "Partial", "1", 2, "0.00002"),  # 0.000015 half-up (floor: 0.00001)
    ("0.00001", "Partial", "1", 3, "0.00000"),  # 0.0000033: down
    ("0.00002", "Partial", "1", 4, "0.00001"),  # 0.000005: half-up
    ("1.00000", "Partial", "250", 1000, "0.25000"),
    ("1.00000", "Partial", "250.5", 1000, "0.25050"),  # a decimal remains is read as such
    ("1.00000", "Partial", "1000", 1000, "1.00000"),  # all of it: the whole charge
    ("1.00000", "Partial", "1001", 1000, "0"),  # above the quantity: not this order's
    ("1.00000", "Partial", "1e9", 1000, "0"),
    ("1.00000", "Partial", "-1", 1000, "0.00000"),  # negative: nothing undelivered
    ("1.00000", "Partial", "-1000", 1000, "0.00000"),
    ("1.00000", "Partial", "abc", 1000, "0"),
    ("1.00000", "Partial", "", 1000, "0"),
    ("1.00000", "Partial", "Infinity", 1000, "0"),
    ("1.00000", "Partial", "-Infinity", 1000, "0"),
    ("1.00000", "Partial", "sNaN", 1000, "0"),
    ("1.00000", "Partial", None, 1000, "0"),
    ("0.00500", "Partial", "1", 1, "0.00500"),  # an order of one, undelivered
    ("1.00000", "Partial", "0", 0, "0"),  # nothing was sent: no division by it
    ("1.00000", "Partial", "5", 0, "0"),
    ("1.00000", "Canceled", None, 1000, "1.00000"),
    ("1.00000", "Refunded", "1001", 1000, "1.00000"),
    ("1.00000", "Completed", "500", 1000, "0"),
    ("1.00000", "Pending", "500", 1000, "0"),
    ("1.00000", "partial", "500", 1000, "0"),  # statuses are exact
])
def test_refund_literal_cases(paid: str, status: str, remains: str | None, total: int,
                              back: str) -> None:
    assert str(refund(Decimal(paid), status, remains, total)) == back
