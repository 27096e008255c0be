"""The one reader of upstream error texts: what a rejection means, and what of it
a client may see.

- `elsewhere`: is the order worth offering to another provider (funds, a
  disabled service, a quantity out of range, an active order on the link, rate
  limits, maintenance)?
- `blame`: whose health does a failure say something about, the provider's or
  one service's? None when it is the order's own fault (a bad link): a healthy
  provider answered sanely.
- `is_funds`: the provider's balance is short (refresh it).
- `kind`: what a rejection says, as one of a closed list of kinds;
  `public_message`: the standard text of that kind, the only upstream-derived
  text a client ever sees (an allow-list: an unknown text gets a generic answer
  and the raw text goes only to the log, so no key, address or name can leak).
"""

from __future__ import annotations

import logging
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


log = logging.getLogger("gateway.upstream")

Kind = Literal["service", "quantity_min", "quantity_max", "active_order", "order",
               "refill", "no_refill", "no_cancel", "link", "unavailable", "other"]

UNAVAILABLE = "Service is temporarily unavailable, try again later"
REJECTED = "Order rejected by the provider"
_ACTIVE = "You have active order with this link. Please wait until order being completed."

_MISSING = r"\b(not\s+found|does\s*n[o']t\s+exist|not\s+exist)"

# What each kind is called, in the order they are tried (the first that matches wins:
# "Refill is disabled for this service" is about the refill, not the service).
_KINDS: list[tuple[Kind, re.Pattern[str]]] = [
    ("refill", re.compile(r"refill[\s_-]*id\b|refill\b[^.]{0,24}?" + _MISSING
                          + r"|(incorrect|invalid|unknown)\s+refill", re.IGNORECASE)),
    ("no_refill", re.compile(r"refill", re.IGNORECASE)),
    ("no_cancel", re.compile(r"cancel", re.IGNORECASE)),
    ("active_order", re.compile(r"active\s+order", re.IGNORECASE)),
    # the provider's own state: funds, limits, maintenance, its key
    ("unavailable", re.compile(_FUNDS.pattern + "|" + _PROVIDER.pattern
                               + r"|api[\s_-]?(key|token)", re.IGNORECASE)),
    ("quantity_min", re.compile(r"quantity.*(less|low|small|minim|at\s+least|below)"
                                r"|(minim|less\s+than|below|at\s+least).*quantity"
                                r"|\bmin(imal|imum)?\b.*\d", re.IGNORECASE)),
    ("quantity_max", re.compile(r"quantity.*(more|high|large|great|maxim|exceed|above|at\s+most)"
                                r"|(maxim|more\s+than|above|exceed|at\s+most).*quantity"
                                r"|\bmax(imal|imum)?\b.*\d", re.IGNORECASE)),
    ("unavailable", re.compile(r"disabled|not\s+available|unavailable|inactive|not\s+active"
                               r"|suspend|paused|closed|offline|\bdown\b|busy", re.IGNORECASE)),
    ("service", re.compile(r"service", re.IGNORECASE)),
    ("order", re.compile(r"order[\s_-]*id\b|order\b[^.]{0,24}?" + _MISSING
                         + r"|(incorrect|invalid|unknown|no\s+such)\s+order\b", re.IGNORECASE)),
    ("link", re.compile(r"link|url|username|user\s*name|profile|account|\bpost\b|private"
                        r"|\bpage\b|video|channel", re.IGNORECASE)),
]
_NUMBER = re.compile(r"\d[\d,.]*\d|\d")


def kind(message: str) -> Kind:
    """What an upstream's rejection says, as one kind of a closed list."""
    for name, pattern in _KINDS:
        if pattern.search(message):
            return name
    return "other"


def _limit(message: str) -> str:
    """The number an upstream gave with a quantity limit, as digits ('' when none)."""
    numbers = [n.replace(",", "") for n in _NUMBER.findall(message)]
    numbers = [n for n in numbers if n.isdigit() and len(n) <= 12]
    return numbers[-1] if len(numbers) >= 1 and len(set(numbers)) == 1 else (
        _after_keyword(message))


def _after_keyword(message: str) -> str:
    m = re.search(r"(minim\w*|maxim\w*|\bmin\b|\bmax\b|at\s+least|at\s+most|less\s+than"
                  r"|more\s+than)\D{0,20}?(\d[\d,]*)", message, re.IGNORECASE)
    if m is None:
        return ""
    digits = m.group(2).replace(",", "")
    return digits if len(digits) <= 12 else ""


_STANDARD: dict[Kind, str] = {
    "service": "Incorrect service ID",
    "active_order": _ACTIVE,
    "order": "Incorrect order ID",
    "refill": "Refill not found",
    "no_refill": "Order cannot be refilled",
    "no_cancel": "Order cannot be canceled",
    "link": "Incorrect link",
    "unavailable": UNAVAILABLE,
    "other": REJECTED,
}


def public_message(message: str, provider: str) -> str:
    """The standard message an upstream's rejection stands for: never its own text.

    The raw text goes to the log only (it may carry the provider's name, address or
    key); the client gets one of a fixed list of messages.
    """
    found = kind(message)
    if found in ("quantity_min", "quantity_max"):
        n = _limit(message)
        base = ("Quantity less than minimal" if found == "quantity_min"
                else "Quantity more than maximal")
        answer = f"{base} {n}" if n else base
    else:
        answer = _STANDARD[found]
    log.info("upstream rejection", extra={"provider": provider, "upstream_error": message[:500],
                                          "kind": found, "answered": answer})
    return answer
