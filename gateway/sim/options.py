"""How one simulated provider is set up: its dialect, catalog, money and faults.

Faults (``fault``, hitting a ``fault_rate`` fraction of ``/api/v2`` requests):

- ``html``: a 502 Cloudflare error page; ``500``: a plain-text 500;
- ``429`` (rate limited, a JSON error) and ``503`` (plain text), each with a
  ``Retry-After: <retry_after>`` header (none when ``retry_after`` is ``None``);
- ``hang``: never answer; ``drop``: close the connection without an answer.

``fault_action`` limits the fault to one action (``None``: every action), and
``fault_count`` to the next N requests it hits (``None``: until it is cleared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DIALECTS = ("toksmm", "testedsmm")
FAULTS = ("html", "500", "429", "503", "hang", "drop")
RETRY_AFTER_FAULTS = frozenset({"429", "503"})  # the faults that carry a Retry-After header
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass
class SimOptions:
    """Configuration of one simulated provider."""

    dialect: str = "toksmm"  # "toksmm" | "testedsmm"
    catalog: list[dict[str, Any]] | None = None  # either dialect's shape; None -> default
    balance: Decimal = Decimal(1000)
    currency: str = "USD"
    key: str | None = None  # None -> any non-empty key accepted
    latency_ms: float = 0.0  # added before every /api/v2 answer
    fault: str | None = None  # None | one of FAULTS
    fault_rate: float = 0.0  # 0..1 fraction of /api/v2 requests hit by the fault
    fault_action: str | None = None  # only requests of this action are faulted; None: all
    fault_count: int | None = None  # the fault clears after hitting this many; None: never
    retry_after: float | None = DEFAULT_RETRY_AFTER_S  # seconds, on 429/503; None: no header
    order_start: int = 1  # first order id handed out (refill ids too)
    progress_s: float = 2.0  # time for an order to go Pending -> In progress -> final
    seed: int = 0  # fixes which orders stall or end Partial (gateway.sim.behaviour)


def check_retry_after(value: Any) -> float | None:
    """A ``Retry-After`` in seconds: a finite number >= 0, or ``None`` (no header)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("retry_after: expected seconds (a number >= 0) or null")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"retry_after: expected seconds >= 0, got {value!r}")
    return seconds


def retry_after_text(seconds: float) -> str:
    """The header value: whole seconds as HTTP wants them (``"3600"``); a fraction
    (not standard HTTP, but read by the gateway) with up to 3 decimals."""
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
