"""The configuration file (`providers.yaml`): typed, validated, with line numbers.

Structs forbid unknown fields, so a typo is an error that names its line.
`${ENV_VAR}` in a string is replaced from the environment when the file is
loaded; nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NoReturn

import msgspec
import yaml

from gateway.errors import ConfigError

ErrorStatus = Literal["standard", "always-200"]
TransportName = Literal["httpx", "httpx-aiohttp", "aiohttp"]

DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_CONCURRENCY = 64


class _Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Policy for every config struct: unknown keys are errors."""


class GatewaySettings(_Config, kw_only=True):
    currency: str = "USD"
    markup: Decimal = Decimal("1")
    # how many units of the gateway currency one unit of each other currency buys
    rates: dict[str, Decimal] = {}
    error_status: ErrorStatus = "standard"
    order_id_start: int = 1000
    refill_id_start: int = 1000
    catalog_ttl_s: float = 300.0  # soft TTL: a list this old is refreshed (with jitter)
    catalog_max_stale_s: float = 86400.0  # hard TTL: an older list is not routed to
    catalog_grace_s: float = 86400.0  # a vanished upstream service stays advertised this long
    min_margin: Decimal = Decimal(0)  # `price` services: cost <= price x (1 - min_margin)
    max_rate_change: Decimal | None = Decimal("0.5")  # hold a markup rate that jumps more
    mirror_id_start: int = 100000
    balance_cache_s: float = 30.0
    status_cache_s: float = 30.0  # repeat polls within this answer from Redis; 0 = off
    balance_refresh_s: float = 60.0  # upstream balances refreshed in the background; 0 = off
    breaker_window_s: float = 60.0
    breaker_min_requests: int = 5
    breaker_threshold: float = 0.5  # failure rate that opens a breaker
    breaker_cooldown_s: float = 30.0  # open -> one probe after this
    transport: TransportName = "aiohttp"
    log_level: str = "INFO"
    # peers whose X-Forwarded-For / Forwarded / X-Real-IP is believed (addresses or CIDRs)
    trusted_proxies: list[str] = []
    header_timeout_s: float = 10.0  # a client must send its request head within this
    body_timeout_s: float = 30.0  # ... and its whole body within this


class ClientSettings(_Config, kw_only=True):
    name: str
    key: str
    mode: Literal["operator", "ledger"] = "operator"
    markup: Decimal | None = None
    prices: dict[int, Decimal] = {}
    services: list[int] | None = None
    rate_limit: float | None = None
    burst: int | None = None
    dup_window_s: float = 0.0
    error_status: ErrorStatus | None = None  # None: gateway.error_status


class ProviderSettings(_Config, kw_only=True):
    name: str
    url: str
    key: str
    currency: str = "USD"
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


class UpstreamRef(_Config, kw_only=True):
    provider: str
    service: int | str

    @property
    def service_id(self) -> str:
        return str(self.service)


class MirrorSettings(_Config, kw_only=True):
    """Expose a provider's catalog (or part of it) under gateway ids that never change."""

    provider: str
    categories: list[str] | None = None
    name_pattern: str | None = None  # a regular expression searched in the service name
    markup: Decimal | None = None


class ServiceSettings(_Config, kw_only=True):
    id: int
    name: str
    category: str = ""
    type: str = "Default"
    desc: str | None = None
    markup: Decimal | None = None
    price: Decimal | None = None
    refill: bool | None = None
    cancel: bool | None = None
    dripfeed: bool | None = None
    upstreams: list[UpstreamRef]


class Settings(_Config, kw_only=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    clients: list[ClientSettings] = []
    providers: list[ProviderSettings] = []
    services: list[ServiceSettings] = []
    mirror: list[MirrorSettings] = []

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps floats as their text, so money never passes through float."""


def _keep_float_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:float", _keep_float_text)


def _line_of(root: yaml.Node | None, path: list[str | int]) -> int | None:
    """1-based line of the node at `path` (dict keys and list indexes)."""
    node, line = root, None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line if line else (node.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _parse_path(text: str) -> list[str | int]:
    """`$.providers[0].url` -> ["providers", 0, "url"]."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return parts


def _expand_env(value: Any, env: dict[str, str], where: list[str | int],
                missing: list[tuple[list[str | int], str]]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in env:
                missing.append((where, m.group(1)))
                return ""
            return env[m.group(1)]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, env, [*where, k], missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, env, [*where, i], missing) for i, v in enumerate(value)]
    return value


def parse_settings(text: str, source: str = "<config>",
                   env: dict[str, str] | None = None) -> Settings:
    """Parse and validate config text. Raises ConfigError naming file and line."""
    env = dict(os.environ) if env is None else env
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{at}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the top level must be a mapping")
    missing: list[tuple[list[str | int], str]] = []
    data = _expand_env(data, env, [], missing)
    if missing:
        where, var = missing[0]
        raise ConfigError(
            f"{source}:{_line_of(root, where) or 1}: environment variable {var} is not set")
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        m = re.search(r"at `(\$[^`]*)`", message)
        path = _parse_path(m.group(1)) if m else []
        unknown = re.search(r"unknown field `([^`]*)`", message)
        if unknown:
            path.append(unknown.group(1))
        line_no = _line_of(root, path) if m else None
        raise ConfigError(f"{source}:{line_no or 1}: {message}") from exc
    _check(settings, root, source)
    return settings


Fail = Callable[[list[str | int], str], NoReturn]


def _check_providers(s: Settings, fail: Fail) -> None:
    names = [p.name for p in s.providers]
    for i, p in enumerate(s.providers):
        if names.count(p.name) > 1:
            fail(["providers", i, "name"], f"provider {p.name!r} is listed twice")
        if not p.url.startswith(("http://", "https://")):
            fail(["providers", i, "url"], "url must start with http:// or https://")
        if not p.key:
            fail(["providers", i, "key"], "key is empty")
        if p.timeout_s <= 0 or p.max_concurrency < 1:
            fail(["providers", i], "timeout_s must be > 0 and max_concurrency >= 1")
        if p.currency != s.gateway.currency and p.currency not in s.gateway.rates:
            fail(["providers", i, "currency"],
                 f"no rate for {p.currency} in gateway.rates (gateway currency is "
                 f"{s.gateway.currency})")


def _check_clients(s: Settings, fail: Fail) -> None:
    seen_keys: set[str] = set()
    for i, c in enumerate(s.clients):
        if not c.key:
            fail(["clients", i, "key"], "key is empty")
        if c.key in seen_keys:
            fail(["clients", i, "key"], "two clients share one key")
        seen_keys.add(c.key)


def _check_services(s: Settings, fail: Fail) -> None:
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
        if not svc.upstreams:
            fail(["services", i, "upstreams"], "a service needs at least one upstream")
        for j, ref in enumerate(svc.upstreams):
            if ref.provider not in names:
                fail(["services", i, "upstreams", j, "provider"],
                     f"unknown provider {ref.provider!r}")


def _check_gateway(s: Settings, fail: Fail) -> None:
    if s.gateway.markup <= 0:
        fail(["gateway", "markup"], "markup must be positive")
    if not Decimal(0) <= s.gateway.min_margin < Decimal(1):
        fail(["gateway", "min_margin"], "min_margin is a fraction: 0 <= min_margin < 1")


def _check_mirror(s: Settings, fail: Fail) -> None:
    names = {p.name for p in s.providers}
    for i, m in enumerate(s.mirror):
        if m.provider not in names:
            fail(["mirror", i, "provider"], f"unknown provider {m.provider!r}")
        if m.name_pattern is not None:
            try:
                re.compile(m.name_pattern)
            except re.error as exc:
                fail(["mirror", i, "name_pattern"], f"not a regular expression: {exc}")
    ids = [svc.id for svc in s.services]
    if s.mirror and ids and max(ids) >= s.gateway.mirror_id_start:
        fail(["gateway", "mirror_id_start"],
             "mirror_id_start must be above every configured service id")


def _check(s: Settings, root: yaml.Node | None, source: str) -> None:
    """Cross-field rules that types alone cannot say; the first broken one is raised."""

    def fail(path: list[str | int], message: str) -> NoReturn:
        raise ConfigError(f"{source}:{_line_of(root, path) or 1}: {message}")

    for check in (_check_providers, _check_clients, _check_services, _check_gateway,
                  _check_mirror):
        check(s, fail)


def load_settings(path: str | Path, env: dict[str, str] | None = None) -> Settings:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    return parse_settings(text, str(p), env)
