"""`catalog suggest`: propose groups of equivalent services across providers.

Two upstream services are proposed as one gateway service when they are for the
same platform and the same metric (followers, likes, views, ...), take the same
order parameters (type family), agree on refill, and their quantity ranges
overlap. The output is YAML for `services:`, meant to be reviewed, not applied
blindly.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TextIO

from gateway.models import UpstreamService
from gateway.money import Converter, rate_up, wire
from gateway.routing.plan import family

PLATFORMS = {
    "tiktok": "TikTok", "instagram": "Instagram", "insta": "Instagram", "ig": "Instagram",
    "youtube": "YouTube", "yt": "YouTube", "telegram": "Telegram", "tg": "Telegram",
    "facebook": "Facebook", "fb": "Facebook", "twitter": "Twitter", "x": "Twitter",
    "spotify": "Spotify", "twitch": "Twitch", "discord": "Discord", "threads": "Threads",
    "linkedin": "LinkedIn", "soundcloud": "SoundCloud", "pinterest": "Pinterest",
}
METRICS = {
    "followers": "followers", "follower": "followers", "follows": "followers",
    "likes": "likes", "like": "likes", "hearts": "likes",
    "views": "views", "view": "views", "plays": "plays", "play": "plays",
    "comments": "comments", "comment": "comments", "shares": "shares", "share": "shares",
    "subscribers": "subscribers", "subs": "subscribers", "members": "members",
    "votes": "votes", "vote": "votes", "saves": "saves", "save": "saves",
    "retweets": "retweets", "reposts": "reposts", "mentions": "mentions",
    "impressions": "impressions", "reach": "impressions", "watchtime": "watch time",
    "reactions": "reactions", "listeners": "listeners",
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@dataclass(frozen=True, slots=True)
class Key:
    platform: str
    metric: str
    family: str
    refill: bool


def key_of(service: UpstreamService) -> Key | None:
    found = words(service.name) + words(service.category)
    platform = next((PLATFORMS[w] for w in found if w in PLATFORMS), None)
    metric = next((METRICS[w] for w in words(service.name) if w in METRICS), None)
    if metric is None:
        metric = next((METRICS[w] for w in found if w in METRICS), None)
    if platform is None or metric is None:
        return None
    return Key(platform, metric, family(service.type), bool(service.refill))


@dataclass(frozen=True, slots=True)
class Member:
    provider: str
    service: UpstreamService
    cost: Decimal  # per 1000, gateway currency


def group(lists: Mapping[str, list[UpstreamService]], converter: Converter,
          currencies: Mapping[str, str]) -> list[tuple[Key, list[Member]]]:
    """Groups with services from at least two providers, cheapest first in each."""
    buckets: dict[Key, list[Member]] = defaultdict(list)
    for provider, services in lists.items():
        for s in services:
            k = key_of(s)
            if k is not None:
                buckets[k].append(Member(provider, s, converter.to_gateway(
                    s.rate, currencies[provider])))
    out = []
    for k, members in buckets.items():
        members.sort(key=lambda m: m.cost)
        # ranges must overlap with the cheapest: an order that fits one fits the others
        lo, hi = members[0].service.min, members[0].service.max
        members = [m for m in members if m.service.min <= hi and m.service.max >= lo]
        if len({m.provider for m in members}) >= 2:
            out.append((k, members))
    out.sort(key=lambda g: (g[0].platform, g[0].metric, g[0].family, not g[0].refill))
    return out


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _service_id(service: str) -> str:
    """An upstream service id as YAML: a number when it is one, else a quoted string."""
    return service if service.isascii() and service.isdigit() else _q(service)


def free_ids(first: int, taken: Collection[int]) -> Iterator[int]:
    """Ids from `first` up, skipping those taken."""
    n = first
    while True:
        if n not in taken:
            yield n
        n += 1


def to_yaml(groups: list[tuple[Key, list[Member]]], currency: str, first_id: int,
            taken: Collection[int] = (), markup: Decimal = Decimal(1)) -> str:
    """`services:` entries for review: ids from `first_id` that no configured service
    has, and the rate each would be advertised at (cheapest x `markup`) as a comment."""
    lines = ["# Proposed by `smm-gateway catalog suggest`: review before adding to services:",
             f"# `rate`: what the gateway would advertise (the cheapest x markup {markup})",
             "services:"]
    ids = free_ids(first_id, set(taken))
    for (k, members), sid in zip(groups, ids, strict=False):
        kind = members[0].service.type
        name = f"{k.platform} {k.metric.title()}" + (" (refill)" if k.refill else "")
        rate = rate_up(members[0].cost * markup)
        lines += [f"  - id: {sid}  # rate {wire(rate)} {currency}/1000",
                  f"    name: {_q(name)}",
                  f"    category: {_q(k.platform)}", f"    type: {_q(kind)}", "    upstreams:"]
        for m in members:
            s = m.service
            lines.append(f"      - {{provider: {m.provider}, service: {_service_id(s.service)}}}"
                         f"  # {wire(m.cost)} {currency}/1000, {s.min}..{s.max}, {s.name!r}")
    return "\n".join(lines) + "\n"


def progress(done: int, total: int, label: str, out: TextIO = sys.stderr) -> None:
    width = 24
    filled = width * done // max(total, 1)
    out.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{total} providers {label:<20}")
    if done == total:
        out.write("\n")
    out.flush()
