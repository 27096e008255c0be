"""The one reader of upstream error texts: what a rejection means, and what of it
a client may see.

- `elsewhere`: is the order worth offering to another provider (funds, a
  disabled service, a quantity out of range, an active order on the link, rate
  limits, maintenance)?
- `blame`: whose health does a failure say something about, the provider's or
  one service's? None when it is the order's own fault (a bad link): a healthy
  provider answered sanely.
- `is_funds`: the provider's balance is short (refresh it).
- `public_message`: the text made safe to pass on (no URL, domain or name).
"""

from __future__ import annotations

import re
from typing import Literal

from gateway.errors import ProviderError, Rejected

Blame = Literal["provider", "service"]

_FUNDS = re.compile(r"fund|balance", re.IGNORECASE)
_SERVICE = re.compile(r"service|disabled|not available|unavailable", re.IGNORECASE)
_PROVIDER = re.compile(r"rate[\s_-]?limit|too many|maintenance|temporar|try again|api key",
                       re.IGNORECASE)
# the order itself does not suit this provider, but may suit another
_ORDER_ELSEWHERE = re.compile(r"quantity|minimal|maximal|minimum|maximum|active order",
                              re.IGNORECASE)
_URL = re.compile(r"(https?://|www\.)\S+|\b[\w-]+(\.[\w-]+)*\.[a-z]{2,}\b", re.IGNORECASE)


def elsewhere(message: str) -> bool:
    """A rejection after which another provider may well accept the same order."""
    return any(p.search(message) for p in (_FUNDS, _SERVICE, _PROVIDER, _ORDER_ELSEWHERE))


def blame(exc: ProviderError) -> Blame | None:
    """Whose failure an upstream error is; None when it says nothing about health."""
    if isinstance(exc, Rejected):
        if _FUNDS.search(exc.message) or _PROVIDER.search(exc.message):
            return "provider"
        if _SERVICE.search(exc.message) and "quantity" not in exc.message.lower():
            return "service"
        return None
    return "provider"


def is_funds(exc: ProviderError) -> bool:
    return isinstance(exc, Rejected) and bool(_FUNDS.search(exc.message))


def public_message(message: str, provider: str) -> str:
    """An upstream's message made safe to show: no URL, domain or provider name."""
    text = _URL.sub("", message)
    text = re.sub(re.escape(provider), "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+", " ", text).strip(" .,:;-")
    return text[:200] or "Incorrect request"
