"""Validating a config beyond its types: every entry and field checked (all problems
reported, unknown keys with the nearest known one), then the rules across fields
(ranges, references between clients, services and providers).

`gateway.config.load.check_text` calls this with a `report(path, message)` that turns
a path in the file into `file:line: message`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import msgspec

from gateway.config.schema import ClientSettings, Settings

ConfigPath = list[str | int]  # where a value is in the file: keys and list indexes
Report = Callable[[ConfigPath, str], None]  # report(path, message)

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_path(text: str) -> ConfigPath:
    """`$.providers[0].url` -> ["providers", 0, "url"]."""
    parts: ConfigPath = []
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return parts


def _dotted(path: ConfigPath) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)



# --- structure: every field of every entry, all errors, with "did you mean" ----------

def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _unknown(key: Any, known: list[str], path: ConfigPath) -> str:
    where = f" in {_dotted(path)}" if path else ""
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else "known keys: " + ", ".join(known)
    return f"unknown field `{key}`{where} ({hint})"


_DROP = object()  # a value that failed: left out, so the rest can still be checked


def _entry(cls: type[msgspec.Struct], data: Any, path: ConfigPath, report: Report) -> Any:
    """One mapping checked against a config struct, every problem in it reported.

    Its good fields (bad ones left out), or _DROP if it cannot stand without them.
    """
    if not isinstance(data, dict):
        report(path, f"Expected `object`, got `{type(data).__name__}` - at `{_dotted(path)}`")
        return _DROP
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    good: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            report([*path, key], _unknown(key, list(fields), path))
            continue
        value = _value(field.type, value, [*path, key], report)
        if value is not _DROP:
            good[key] = value
    for name, field in fields.items():
        if field.required and name not in good:
            if name not in data:
                report(path, f"Object missing required field `{name}` - at `{_dotted(path)}`")
            return _DROP
    return good


def _value(tp: Any, value: Any, path: ConfigPath, report: Report) -> Any:
    if _is_struct(tp):
        return _entry(tp, value, path, report)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and args and _is_struct(args[0]) and isinstance(value, list):
        items = [_entry(args[0], v, [*path, i], report) for i, v in enumerate(value)]
        return [v for v in items if v is not _DROP]
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        report([*path, *_parse_path("$" + at)], f"{message} - at `{_dotted(path)}"
               + (f"{at.rstrip('`')}`" if at else "`"))
        return _DROP
    return value


def structure(data: dict[Any, Any], report: Report) -> tuple[dict[str, Any], set[str]]:
    """What is well formed (bad fields and entries left out), and the sections
    that lost an entry: references into those are not checked."""
    clean: dict[str, Any] = {}
    broken: set[str] = set()
    sections = {f.encode_name: f.type for f in msgspec.structs.fields(Settings)}
    for key, value in data.items():
        tp = sections.get(key)
        if tp is None:
            report([key], _unknown(key, list(sections), []))
            continue
        value = _value(tp, value, [key], report)
        if value is _DROP:
            broken.add(key)
            continue
        if isinstance(value, list) and len(value) < len(data[key]):
            broken.add(key)
        clean[key] = value
    return clean, broken


# --- rules across fields ----------------------------------------------------------

def _check_providers(s: Settings, fail: Report, broken: set[str]) -> None:
    names = [p.name for p in s.providers]
    for i, p in enumerate(s.providers):
        if not p.name:
            fail(["providers", i, "name"], "name is empty")
        elif names.count(p.name) > 1:
            fail(["providers", i, "name"], f"provider {p.name!r} is listed twice")
        if not p.url.startswith(("http://", "https://")):
            fail(["providers", i, "url"], "url must start with http:// or https://")
        if not p.key:
            fail(["providers", i, "key"], "key is empty")
        if not p.timeout_s > 0:
            fail(["providers", i, "timeout_s"], "timeout_s must be > 0")
        if p.max_concurrency < 1:
            fail(["providers", i, "max_concurrency"], "max_concurrency must be >= 1")
        if p.currency != s.gateway.currency and p.currency not in s.gateway.rates:
            fail(["providers", i, "currency"],
                 f"no rate for {p.currency} in gateway.rates (gateway currency is "
                 f"{s.gateway.currency})")


def _service_known(s: Settings, service_id: int) -> bool:
    """A configured service id, or one that a `mirror:` entry may hand out."""
    if any(svc.id == service_id for svc in s.services):
        return True
    return bool(s.mirror) and service_id >= s.gateway.mirror_id_start


def _check_client_refs(s: Settings, i: int, c: ClientSettings, fail: Report) -> None:
    configured = ", ".join(str(svc.id) for svc in s.services) or "none"
    for j, sid in enumerate(c.services or []):
        if not _service_known(s, sid):
            fail(["clients", i, "services", j],
                 f"unknown service id {sid} (configured services: {configured})")
    for sid, price in c.prices.items():
        if not _service_known(s, sid):
            fail(["clients", i, "prices", sid],
                 f"unknown service id {sid} (configured services: {configured})")
        if not price > 0:
            fail(["clients", i, "prices", sid], "a price must be > 0")


def _check_clients(s: Settings, fail: Report, broken: set[str]) -> None:
    seen_keys: set[str] = set()
    names = [c.name for c in s.clients]
    for i, c in enumerate(s.clients):
        if not c.name:
            fail(["clients", i, "name"], "name is empty")
        elif names.count(c.name) > 1:
            fail(["clients", i, "name"], f"client {c.name!r} is listed twice")
        if not c.key:
            fail(["clients", i, "key"], "key is empty")
        elif c.key in seen_keys:
            fail(["clients", i, "key"], "two clients share one key")
        seen_keys.add(c.key)
        if c.markup is not None and not c.markup > 0:
            fail(["clients", i, "markup"], "markup must be > 0")
        if c.rate_limit is not None and not c.rate_limit > 0:
            fail(["clients", i, "rate_limit"],
                 "rate_limit must be > 0 requests per second (leave it out for no limit)")
        if c.burst is not None and c.burst < 1:
            fail(["clients", i, "burst"], "burst must be >= 1")
        if not c.dup_window_s >= 0:
            fail(["clients", i, "dup_window_s"], "dup_window_s must be >= 0")
        if "services" not in broken:
            _check_client_refs(s, i, c, fail)
        _check_client_routing(s, i, c, fail, broken)


def _check_client_routing(s: Settings, i: int, c: ClientSettings, fail: Report,
                          broken: set[str]) -> None:
    """`providers: {allow|deny: [names]}` names configured providers; `max_rate` > 0."""
    if c.max_rate is not None and not c.max_rate > 0:
        fail(["clients", i, "max_rate"], "max_rate must be > 0 (leave it out for no cap)")
    rules = c.providers
    if rules is None:
        return
    if (rules.allow is None) == (rules.deny is None):
        fail(["clients", i, "providers"], "give either `allow` or `deny` (a list of "
             "provider names), not both and not neither")
    if rules.allow is not None and not rules.allow:
        fail(["clients", i, "providers", "allow"],
             "allow names no provider: this client's orders could never be placed")
    if "providers" in broken:
        return
    names = {p.name for p in s.providers}
    for how, listed in (("allow", rules.allow), ("deny", rules.deny)):
        for j, name in enumerate(listed or []):
            if name not in names:
                fail(["clients", i, "providers", how, j], f"unknown provider {name!r} "
                     f"(providers: {', '.join(sorted(names)) or 'none'})")


def _check_services(s: Settings, fail: Report, broken: set[str]) -> None:
    names = {p.name for p in s.providers}
    ids: set[int] = set()
    for i, svc in enumerate(s.services):
        if svc.id in ids:
            fail(["services", i, "id"], f"service id {svc.id} is used twice")
        if svc.id <= 0:
            fail(["services", i, "id"], "service id must be a positive integer")
        ids.add(svc.id)
        if svc.price is not None and svc.markup is not None:
            fail(["services", i, "markup"], "give either price or markup, not both")
        for field, value in (("price", svc.price), ("markup", svc.markup)):
            if value is not None and not value > 0:
                fail(["services", i, field], f"{field} must be > 0")
        if not svc.upstreams:
            fail(["services", i, "upstreams"], "a service needs at least one upstream")
        _check_shares(["services", i], svc.min_success, svc.explore_share, fail)
        if svc.max_rate is not None and not svc.max_rate > 0:
            fail(["services", i, "max_rate"], "max_rate must be > 0")
        for field in ("rescue_after_s", "max_rescues"):
            if (getattr(svc, field) or 0) < 0:
                fail(["services", i, field], f"{field} must be >= 0")
        if svc.link_family is not None and not svc.link_family.strip():
            fail(["services", i, "link_family"], "link_family is empty (leave it out: the "
                 "service's own id)")
        refs = [(ref.provider, ref.service_id) for ref in svc.upstreams]
        for j, ref in enumerate(svc.upstreams):
            if ref.provider not in names and "providers" not in broken:
                fail(["services", i, "upstreams", j, "provider"],
                     f"unknown provider {ref.provider!r} (providers: "
                     f"{', '.join(sorted(names)) or 'none'})")
            if refs.index((ref.provider, ref.service_id)) < j:
                fail(["services", i, "upstreams", j], f"{ref.provider} service "
                     f"{ref.service_id} is listed twice")


ADMIN_KEY_MIN = 16
_POSITIVE = ("catalog_ttl_s", "catalog_max_stale_s", "breaker_window_s", "header_timeout_s",
             "body_timeout_s", "order_id_start", "refill_id_start", "mirror_id_start",
             "idempotency_lease_s", "max_in_flight", "link_guard_ttl_s",
             "score_window_d", "fastest_max_factor", "rescue_every_s",
             "durability_replicas", "durability_timeout_ms")
_NON_NEGATIVE = ("catalog_grace_s", "balance_cache_s", "status_cache_s", "balance_refresh_s",
                 "breaker_cooldown_s", "min_evidence", "slow_start_after_s",
                 "slow_start_penalty", "refill_refusal_penalty", "policy_cache_s",
                 "rescue_after_s", "max_rescues", "rescue_confirm_s")


def _check_shares(path: ConfigPath, min_success: float | None, explore_share: float | None,
                  fail: Report) -> None:
    """The routing policy's shares (gateway-wide or a service's) are fractions."""
    if min_success is not None and not 0 <= min_success <= 1:
        fail([*path, "min_success"], "min_success is a share: 0 <= min_success <= 1")
    if explore_share is not None and not 0 <= explore_share < 1:
        fail([*path, "explore_share"], "explore_share is a share: 0 <= explore_share < 1")


def _check_admin_key(key: str | None, fail: Report) -> None:
    if key is not None and len(key.strip()) < ADMIN_KEY_MIN:
        fail(["gateway", "admin_key"], f"admin_key must be at least {ADMIN_KEY_MIN} characters "
             "(it opens the operator dashboard); leave it out to keep /admin/ off")


def _check_gateway(s: Settings, fail: Report, broken: set[str]) -> None:
    g = s.gateway
    for name in _POSITIVE:
        if not getattr(g, name) > 0:
            fail(["gateway", name], f"{name} must be > 0")
    for name in _NON_NEGATIVE:
        if not getattr(g, name) >= 0:
            fail(["gateway", name], f"{name} must be >= 0")
    if not g.markup > 0:
        fail(["gateway", "markup"], "markup must be positive")
    if not Decimal(0) <= g.min_margin < Decimal(1):
        fail(["gateway", "min_margin"], "min_margin is a fraction: 0 <= min_margin < 1")
    if g.max_rate_change is not None and not g.max_rate_change > 0:
        fail(["gateway", "max_rate_change"], "max_rate_change must be > 0 (or null: off)")
    _check_shares(["gateway"], g.min_success, g.explore_share, fail)
    if g.breaker_min_requests < 1:
        fail(["gateway", "breaker_min_requests"], "breaker_min_requests must be >= 1")
    if not 0 < g.breaker_threshold <= 1:
        fail(["gateway", "breaker_threshold"], "breaker_threshold is a rate: 0 < it <= 1")
    if g.log_level.upper() not in _LEVELS:
        fail(["gateway", "log_level"],
             f"log_level must be one of {', '.join(_LEVELS)} (got {g.log_level!r})")
    for currency, rate in g.rates.items():
        if not rate > 0:
            fail(["gateway", "rates", currency], f"the rate of {currency} must be > 0")
    _check_admin_key(g.admin_key, fail)
    for j, proxy in enumerate(g.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            fail(["gateway", "trusted_proxies", j],
                 f"not an address or network (CIDR): {proxy!r}")


def _check_mirror(s: Settings, fail: Report, broken: set[str]) -> None:
    names = {p.name for p in s.providers}
    for i, m in enumerate(s.mirror):
        if m.provider not in names and "providers" not in broken:
            fail(["mirror", i, "provider"], f"unknown provider {m.provider!r}")
        if m.markup is not None and not m.markup > 0:
            fail(["mirror", i, "markup"], "markup must be > 0")
        if m.name_pattern is not None:
            try:
                re.compile(m.name_pattern)
            except re.error as exc:
                fail(["mirror", i, "name_pattern"], f"not a regular expression: {exc}")
    ids = [svc.id for svc in s.services]
    if s.mirror and ids and max(ids) >= s.gateway.mirror_id_start:
        fail(["gateway", "mirror_id_start"],
             "mirror_id_start must be above every configured service id")


def _check_alerts(s: Settings, fail: Report, broken: set[str]) -> None:
    a = s.alerts
    for j, url in enumerate(a.webhooks):
        try:
            parts = urlsplit(url)
            good = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            good = False
        if not good:
            # the URL itself is not echoed: a webhook's path is often its secret
            fail(["alerts", "webhooks", j], "a webhook must be an http:// or https:// URL "
                 "with a host")
    names = {p.name for p in s.providers}
    for name, amount in a.balance_below.items():
        if name not in names and "providers" not in broken:
            fail(["alerts", "balance_below", name], f"unknown provider {name!r} (providers: "
                 f"{', '.join(sorted(names)) or 'none'})")
        if not amount >= 0:
            fail(["alerts", "balance_below", name], "a balance threshold must be >= 0")
    for name in ("repeat_s", "timeout_s"):
        if not getattr(a, name) > 0:
            fail(["alerts", name], f"{name} must be > 0")
    if a.attempts < 1:
        fail(["alerts", "attempts"], "attempts must be >= 1")


_CHECKS = (_check_gateway, _check_providers, _check_clients, _check_services, _check_mirror,
           _check_alerts)


def check_rules(s: Settings, report: Report, broken: set[str]) -> None:
    """Every rule across fields; a section in `broken` had an entry left out, so
    references into it are not checked (they would only echo that error)."""
    for check in _CHECKS:
        check(s, report, broken)
