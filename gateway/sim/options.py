"""How one simulated provider is set up: its dialect, catalog, money and faults."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DIALECTS = ("toksmm", "testedsmm")
FAULTS = ("html", "500", "hang", "drop")


@dataclass
class SimOptions:
    """Configuration of one simulated provider."""

    dialect: str = "toksmm"  # "toksmm" | "testedsmm"
    catalog: list[dict[str, Any]] | None = None  # either dialect's shape; None -> default
    balance: Decimal = Decimal(1000)
    currency: str = "USD"
    key: str | None = None  # None -> any non-empty key accepted
    latency_ms: float = 0.0  # added before every /api/v2 answer
    fault: str | None = None  # None | "html" | "500" | "hang" | "drop"
    fault_rate: float = 0.0  # 0..1 fraction of /api/v2 requests hit by the fault
    order_start: int = 1  # first order id handed out (refill ids too)
    progress_s: float = 2.0  # time for an order to go Pending -> In progress -> final
