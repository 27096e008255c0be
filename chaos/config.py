"""What a chaos run does (`Plan`) and the gateway config its replicas serve."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from gateway.config import GatewaySettings

LEDGER_CLIENT = "chaos-ledger"  # prepaid: every add reserves money first
OPERATOR_CLIENT = "chaos-op"
KEYS = {LEDGER_CLIENT: "chaos-ledger-key", OPERATOR_CLIENT: "chaos-op-key"}
PROVIDERS = ("prov-a", "prov-b")  # prov-a: toksmm dialect, prov-b: testedsmm
ORDER_ID_START = 5000

# prov-b's catalog: Followers cheaper than prov-a's, Likes dearer, so each gateway
# service has a different first choice and a fallback on the other provider.
CATALOG_B = [
    {"service": 11, "name": "Followers", "type": "Default", "category": "TikTok",
     "rate": "0.40", "min": 20, "max": 5000, "refill": 1, "cancel": 1, "dripfeed": 1},
    {"service": 12, "name": "Likes", "type": "Default", "category": "TikTok",
     "rate": "0.30", "min": 10, "max": 100000, "refill": 0, "cancel": 1},
]
SERVICES = (1, 2)


@dataclass(frozen=True)
class Plan:
    """The size of one run. The defaults are the full run (a few minutes)."""

    cycles: int = 8  # times the fault schedule is played
    lean: bool = False  # a shorter cycle: no slow-provider step, one replica kill less
    step_s: float = 2.0  # how long an upstream fault lasts
    down_s: float = 1.5  # how long a killed replica or Redis stays down
    workers: int = 32  # concurrent panels
    replicas: int = 2
    serve_workers: str = "auto"  # each replica's `serve --workers` (serve's default: auto)
    tail_s: float = 2.0  # load after the last fault
    drain_s: float = 15.0  # a SIGTERMed replica is SIGKILLed if it has not exited by then
    settle_s: float = 2.0  # quiet time after every replica was restarted
    retry_s: float = 40.0  # how long keyed panels keep retrying once the load stopped
    client_timeout_s: float = 20.0  # a panel's HTTP timeout (> the claim wait + provider)
    provider_timeout_s: float = 1.0
    lease_s: float | None = None  # gateway.idempotency_lease_s, where the gateway has it
    latency_ms: float = 50.0  # every provider answer takes this long (orders in flight)
    progress_s: float = 5.0  # simulated orders: Pending -> final
    credit: Decimal = Decimal(40)  # first top-up of the prepaid client; each topup step too

    def scaled(self, **changes: Any) -> Plan:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


FULL = Plan()
SHORT = Plan(cycles=1, lean=True, step_s=0.25, down_s=0.3, workers=12, tail_s=0.5,
             drain_s=1.5, settle_s=0.2, retry_s=4.0, client_timeout_s=12.0,
             provider_timeout_s=0.8, lease_s=3.0, progress_s=1.0, credit=Decimal(15))


def gateway_config(sim_apis: dict[str, str], plan: Plan) -> dict[str, Any]:
    """Two services on both providers, a prepaid and an operator client.

    Breakers trip and recover within the fault steps, so the load keeps reaching
    the providers; nothing is cached, so every status poll goes upstream.
    """
    gateway: dict[str, Any] = {
        "currency": "USD", "markup": "1.5", "order_id_start": ORDER_ID_START,
        "balance_cache_s": 0, "status_cache_s": 0, "log_level": "INFO",
        "breaker_window_s": 5, "breaker_min_requests": 5, "breaker_threshold": 0.5,
        "breaker_cooldown_s": 1,
    }
    if plan.lease_s is not None and "idempotency_lease_s" in GatewaySettings.__struct_fields__:
        gateway["idempotency_lease_s"] = plan.lease_s
    return {
        "gateway": gateway,
        "clients": [
            {"name": LEDGER_CLIENT, "key": KEYS[LEDGER_CLIENT], "mode": "ledger"},
            {"name": OPERATOR_CLIENT, "key": KEYS[OPERATOR_CLIENT]},
        ],
        "providers": [
            {"name": name, "url": url, "key": f"upstream-{name}",
             "timeout_s": plan.provider_timeout_s}
            for name, url in sim_apis.items()],
        "services": [
            {"id": 1, "name": "Followers", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 1},
                           {"provider": "prov-b", "service": 11}]},
            {"id": 2, "name": "Likes", "category": "TikTok",
             "upstreams": [{"provider": "prov-a", "service": 2},
                           {"provider": "prov-b", "service": 12}]},
        ],
    }
