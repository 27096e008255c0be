"""One active order per link: which order holds a link, shared by every replica.

A link is held within a *service family* (the services configured with the same
`link_family`, else one service) by a mark, `keys.link_mark(sha256(family,
normalised link))`, whose value names the holding order: `"<order id>:<taken
ms>:<service>:<client>"`. Taking a free link is one `SET` inside a script
(`scripts.LINK_TAKE`), so of two replicas racing for a link exactly one wins.

When the link is held, the holder's order record decides:
- `placed` with a final status (Completed, Partial, Canceled, Refunded), or
  `failed`: it is done, and the link is taken over by replacing exactly that mark
  (if another add replaced it first, its record decides in turn);
- `placed` with any other status, `dispatching`, `unknown` (resolve it with
  `orders resolve`): still active, the new order is refused;
- no record: its add is between taking the link and recording the order (the
  record is written before anything is sent), or its replica died there. Younger
  than LINK_GRACE_S it is in flight; older, its order id is recorded as failed
  (`HSETNX`, as when a lapsed idempotency claim is taken over: if that add still
  runs, it finds its id taken and never sends) and the link is taken over.

An add that places nothing (refused everywhere, no funds, no candidate) gives its
link back at once (`release`: compare-and-delete of its own mark). The mark's TTL
(`gateway.link_guard_ttl_s`, 30 days) is only a safety net: a holder whose status
is never polled again stops holding its link then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from gateway.clock import SYSTEM, Clock
from gateway.digest import sha256_hex
from gateway.models import OrderRecord
from gateway.state import keys, scripts
from gateway.state.connect import maps_redis_errors, text
from gateway.state.orders import Orders
from gateway.state.recovery import PENDING_GRACE_S

LINK_GRACE_S = PENDING_GRACE_S  # a holder with no order record after this has died
_ATTEMPTS = 3  # take-overs in a row lost to other adds: the link is busy

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_HOST = re.compile(r"(?:[^\s/?#@]+@)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::[0-9]*)?")
_DEFAULT_PORTS = (":80", ":443")


def normalise_link(link: str) -> str:
    """The same target, the same text: trimmed; `http://`, `https://` and no scheme
    alike; host in lower case without `www.` or a default port; no trailing slash,
    no `#fragment`, no `utm_*` query parameters. The path and the rest of the query
    keep their case (a video id is case-sensitive). Anything that is not a URL (a
    bare username) is only trimmed."""
    raw = link.strip()
    scheme = ""
    m = _SCHEME.fullmatch(raw)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        if scheme in ("http", "https"):
            scheme = ""
    else:
        rest = raw
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not m and not _HOST.fullmatch(head):
        return raw
    rest, _, _ = rest.partition("#")
    rest, _, query = rest.partition("?")
    host, slash, path = rest.partition("/")
    host = host.lower()
    for port in _DEFAULT_PORTS:
        host = host.removesuffix(port)
    host = host.removeprefix("www.")
    path = (slash + path).rstrip("/")
    kept = [p for p in query.split("&") if p and not p.lower().startswith("utm_")]
    out = host + path + ("?" + "&".join(kept) if kept else "")
    if not out:
        return raw  # nothing left to compare: only the same text is the same link
    return f"{scheme}://{out}" if scheme else out


def link_digest(family: str, link: str) -> str:
    """128 bits of SHA-256: no two links collide, and a mark costs little memory."""
    return sha256_hex(f"{family}\n{normalise_link(link)}")[:32]


@dataclass(frozen=True, slots=True)
class Taken:
    """This add holds the link: `release` it if the add places nothing."""

    key: str
    mark: str


@dataclass(frozen=True, slots=True)
class Held:
    """Another order, still active, holds the link."""

    order: int


@dataclass(frozen=True, slots=True)
class _Mark:
    order: int
    at_ms: int
    service: int
    client: str

    @classmethod
    def parse(cls, value: str) -> _Mark | None:
        parts = value.split(":", 3)
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), parts[3])


@maps_redis_errors
class Links:
    def __init__(self, orders: Orders, clock: Clock = SYSTEM) -> None:
        self._orders = orders
        self._clock = clock
        self._take = orders.redis.register_script(scripts.LINK_TAKE)
        self._release = orders.redis.register_script(scripts.RELEASE)

    async def take(self, family: str, link: str, order_id: int, ttl_s: float,
                   client: str, service: int) -> Taken | Held:
        """Hold `link` within `family` for `order_id`, unless an active order does."""
        key = keys.link_mark(link_digest(family, link))
        mine = f"{order_id}:{int(self._clock.time() * 1000)}:{service}:{client}"
        ttl_ms = max(1, int(ttl_s * 1000))
        replace, holder = "", 0
        for _ in range(_ATTEMPTS):
            held = await self._take(keys=[key], args=[mine, ttl_ms, replace])
            if held is None:
                return Taken(key, mine)
            replace = text(held)
            mark = _Mark.parse(replace)
            if mark is not None:
                holder = mark.order
                if await self._active(mark, link):
                    return Held(holder)
        return Held(holder)  # taken over by others each time: busy, and active

    async def release(self, taken: Taken) -> None:
        """Give the link back (only if this add still holds it)."""
        await self._release(keys=[taken.key], args=[taken.mark])

    async def _active(self, mark: _Mark, link: str) -> bool:
        """Whether the order a mark names may still be delivering on the link."""
        rec = (await self._orders.get_orders([mark.order])).get(mark.order)
        if rec is None:
            if self._clock.time() * 1000 - mark.at_ms < LINK_GRACE_S * 1000:
                return True  # being placed right now
            if await self._orders.create_order(mark.order, _abandoned(mark, link)):
                return False  # its add died before recording it: it can never send now
            rec = (await self._orders.get_orders([mark.order])).get(mark.order)
            if rec is None:
                return True
        return not (rec.state == "failed" or (rec.state == "placed" and rec.final))


def _abandoned(mark: _Mark, link: str) -> OrderRecord:
    return OrderRecord(client=mark.client, service=mark.service, provider="",
                       upstream_service="", link=link, quantity=0, charge=Decimal(0),
                       cost=Decimal(0), created=mark.at_ms // 1000, state="failed")
