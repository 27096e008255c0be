"""The configuration file's schema (`providers.yaml`): one msgspec Struct per section.

Structs forbid unknown fields, so a typo is an error that names its line (the
loader, `gateway.config.load`, finds it). Nothing here reads the environment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

ErrorStatus = Literal["standard", "always-200"]
PolicyName = Literal["cheapest", "best_value", "fastest"]  # gateway.routing.policy
TransportName = Literal["httpx", "httpx-aiohttp", "aiohttp"]
ServerName = Literal["uvicorn", "granian"]  # gateway.ops.servers
DurabilityName = Literal["auto", "written", "fsync", "replicas"]  # gateway.state.durability

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
    # scorecards (gateway.state.scores) weigh an event e^(-age / this window), in days
    score_window_d: float = 14.0
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
    access_log: bool = True  # one JSON line per API request on the `gateway.access` logger
    server: ServerName = "uvicorn"  # the ASGI server `serve` runs (`serve --server` wins)
    # an Idempotency-Key holder's lease (renewed while it works); at least twice the
    # slowest provider timeout
    idempotency_lease_s: float = 30.0
    # API requests served at once by one worker; more wait their turn (a burst of
    # connections then costs a little memory each, not a whole request's worth)
    max_in_flight: int = 256
    # the operator dashboard at /admin/ and its API at /admin/api/: off (404) when unset
    admin_key: str | None = None
    # `/metrics` answers any peer that sends `Authorization: Bearer <this>`; loopback
    # and `trusted_proxies` peers need none, everyone else gets 401/403
    metrics_key: str | None = None
    # one active order per link and service family (a service's own `link_guard` wins)
    link_guard: bool = False
    link_guard_ttl_s: float = 2592000.0  # a link's mark lapses after this (30 days) at worst
    # routing policies (gateway.routing.policy); a service's own `policy` etc. win
    policy: PolicyName = "cheapest"
    min_evidence: float = 20.0  # scorecard weight `n` under which the neutral prior holds
    min_success: float | None = None  # floor on the completed share (None: no floor)
    explore_share: float = 0.0  # share of orders sent to a candidate with too little evidence
    slow_start_after_s: float = 3600.0  # best_value: mean starts slower than this cost ...
    slow_start_penalty: float = 0.05  # ... this much more per hour beyond it
    refill_refusal_penalty: float = 0.25  # best_value: x (1 + this x refills failed share)
    fastest_max_factor: Decimal = Decimal("1.5")  # fastest: cap over the cheapest rate
    policy_cache_s: float = 5.0  # scorecards reused this long per process (0: every add)
    # order rescue (gateway.actions.rescue): a service's own `rescue_after_s` wins; 0: off
    rescue_after_s: float = 0.0  # an order not started this long after placement is moved
    max_rescues: int = 1  # re-placements per order
    rescue_every_s: float = 5.0  # how often the rescue job looks (one replica at a time)
    rescue_confirm_s: float = 60.0  # how long a cancel may take to show `Canceled`
    # what must hold before an order's outcome is answered (gateway.state.durability):
    # auto (the safest the Redis in use supports) | written | fsync | replicas
    durability: DurabilityName = "auto"
    durability_replicas: int = 1  # `replicas` (and at most this many for `auto`)
    durability_timeout_ms: int = 500  # past it, the outcome is also journaled


class ProviderRules(_Config, kw_only=True):
    """A client's providers: only those in `allow`, or all but those in `deny`."""

    allow: list[str] | None = None
    deny: list[str] | None = None


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
    # routing rules: which providers may fill this client's orders, and the most the
    # gateway may pay for them per 1000 (gateway currency)
    providers: ProviderRules | None = None
    max_rate: Decimal | None = None


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
    link_guard: bool | None = None  # None: gateway.link_guard
    # services sharing a link_family share one active order per link (default: this id)
    link_family: str | None = None
    policy: PolicyName | None = None  # None: gateway.policy
    min_success: float | None = None  # None: gateway.min_success
    explore_share: float | None = None  # None: gateway.explore_share
    max_rate: Decimal | None = None  # fastest: the most it pays per 1000 (else the factor)
    rescue_after_s: float | None = None  # None: gateway.rescue_after_s; 0: off
    max_rescues: int | None = None  # None: gateway.max_rescues


class AlertSettings(_Config, kw_only=True):
    """Operator alerts (`gateway.alerts`): JSON POSTed to each webhook, once across replicas."""

    webhooks: list[str] = []  # http(s) URLs; `${VAR}` keeps a webhook's token out of the file
    # provider -> alert when its balance (in the provider's own currency) is below this
    balance_below: dict[str, Decimal] = {}
    repeat_s: float = 21600.0  # a lasting condition (low balance, held rate) is re-sent this often
    timeout_s: float = 10.0  # one POST
    attempts: int = 5  # POSTs per webhook and alert, with exponential backoff between them


class Settings(_Config, kw_only=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)
    clients: list[ClientSettings] = []
    providers: list[ProviderSettings] = []
    services: list[ServiceSettings] = []
    mirror: list[MirrorSettings] = []

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)
