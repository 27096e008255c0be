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
