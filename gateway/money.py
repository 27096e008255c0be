"""Money rules: Decimal only, converted to the gateway currency, 5 decimals on the wire.

- Provider prices are converted with `gateway.rates` (units of the gateway
  currency per unit of the provider's currency).
- Advertised rates are rounded *up* to 5 decimals (never advertise below cost x
  markup); charges and costs are rounded half-up to 5 decimals.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from gateway.config import GatewaySettings

WIRE = Decimal("0.00001")
THOUSAND = Decimal(1000)


def wire(amount: Decimal) -> str:
    """The 5-decimal text panels expect: `"0.50000"`."""
    return str(amount.quantize(WIRE, rounding=ROUND_HALF_UP))


def rate_up(amount: Decimal) -> Decimal:
    return amount.quantize(WIRE, rounding=ROUND_CEILING)


def charge(rate: Decimal, quantity: int, runs: int | None = None) -> Decimal:
    """Price of `quantity` (x `runs` for drip-feed) at `rate` per 1000."""
    total = quantity * (runs or 1)
    return (rate * total / THOUSAND).quantize(WIRE, rounding=ROUND_HALF_UP)


class Converter:
    def __init__(self, settings: GatewaySettings) -> None:
        self.currency = settings.currency
        self._rates = dict(settings.rates)
        self._rates[settings.currency] = Decimal(1)

    def knows(self, currency: str) -> bool:
        return currency in self._rates

    def to_gateway(self, amount: Decimal, currency: str) -> Decimal:
        return amount * self._rates[currency]


# Prepaid balances live in Redis as integers of UNIT, so that Redis (INCRBY, in
# int64) does the arithmetic and no amount ever passes through a float.
UNIT = WIRE


def to_units(amount: Decimal) -> int:
    return int(amount.quantize(UNIT, rounding=ROUND_HALF_UP) / UNIT)


def from_units(units: int | str | bytes) -> Decimal:
    value = units.decode() if isinstance(units, bytes) else units
    return (Decimal(int(value)) * UNIT).quantize(UNIT)


def refund(charge: Decimal, status: str, remains: str | None, total: int) -> Decimal:
    """What goes back to the client for a final status: all of it for Canceled and
    Refunded, `charge x remains / total` for Partial, nothing otherwise.

    `total` is what was charged for and sent upstream. A Partial whose remains are
    more than that is not about this order (another quantity went upstream, or the
    provider's figure is wrong): nothing is refunded on its word, since the part
    not delivered is unknown and a refund may never exceed the charge for it."""
    if status in ("Canceled", "Refunded"):
        return charge
    if status == "Partial" and total > 0 and remains is not None:
        try:
            left = Decimal(remains)
        except ArithmeticError:
            return Decimal(0)
        if not left.is_finite() or left > total:
            return Decimal(0)
        left = max(left, Decimal(0))
        return (charge * left / total).quantize(WIRE, rounding=ROUND_HALF_UP)
    return Decimal(0)
