"""What each scenario sends, to the gateway and to the references, and its fixtures.

A scenario is one panel action. For every target the same action is sent: to
the gateway with the gateway's key and order ids, and to the simulator direct
(or through nginx) with the upstream key and the simulator's own order ids, so
"direct" is what the same call costs without the gateway in between.

Fixtures are made fresh for each scenario and latency: the simulators are reset
(a long run would otherwise pile up hundreds of thousands of orders in them and
their garbage collector would show up in the references' p99), then orders are
placed through the gateway and direct, and forced `Completed` where `refill`
needs it. Orders stay `Pending` otherwise (`--progress-s 3600`), so a status is
never final and every gateway `status` goes upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from bench import osstat
from bench.procs import (
    CLIENT_KEY,
    MAIN_SERVICE,
    PER_PROVIDER_SERVICES,
    PROVIDERS,
    UPSTREAM_KEY,
    GatewayServer,
    Sim,
)
from gateway.state.connect import connect
from gateway.state.orders import Orders

Bodies = tuple[tuple[int, str], ...]

SCENARIOS = ("services", "status", "status_cached", "multi_status", "add", "refill",
             "balance", "mixed")
TITLES = {
    "services": "services (warm cache)",
    "status": "status, 1 order, cache off",
    "status_cached": "status, 1 order, cache on",
    "multi_status": "multi-status, 100 orders / 4 providers",
    "add": "add",
    "refill": "refill",
    "balance": "balance",
    "mixed": "mixed: 90% status, 8% add, 2% services",
}
FIXTURE_ATTEMPTS = 5
MULTI_ORDERS = 100
MIXED_ORDERS = 20
QUANTITY = 100


def link(n: int) -> str:
    """A realistic ~40 character link."""
    return f"https://www.tiktok.com/@bench_user_{n:06d}"


def form(key: str, **fields: str | int) -> str:
    return urlencode({"key": key, **{k: str(v) for k, v in fields.items()}})


def add_fields(n: int, service: int) -> dict[str, str | int]:
    return {"action": "add", "service": service, "link": link(n), "quantity": QUANTITY}


@dataclass(frozen=True)
class Prepared:
    """Bodies for the gateway and for the references (direct and nginx)."""

    gateway: Bodies
    upstream: Bodies


@dataclass
class Env:
    """The running processes a scenario needs to make its fixtures."""

    sims: Mapping[str, Sim]
    gateway: GatewayServer
    redis_url: str
    http: httpx.Client

    @property
    def main(self) -> Sim:
        return self.sims[PROVIDERS[0]]


def _gateway_add(env: Env, n: int, service: int = MAIN_SERVICE) -> int:
    fields = {k: str(v) for k, v in add_fields(n, service).items()}
    for _ in range(FIXTURE_ATTEMPTS):
        answer = env.gateway.post(env.http, **fields)
        if "order" in answer:
            return int(answer["order"])
        time.sleep(0.5)
    raise RuntimeError(f"fixture add through the gateway failed: {answer}")


def upstream_ids(redis_url: str, order_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Gateway order id -> (provider, upstream order id), read through the gateway's store."""

    async def read() -> dict[int, tuple[str, str]]:
        redis = connect(redis_url)
        store = Orders(redis)
        try:
            records = await store.get_orders(order_ids)
        finally:
            await redis.aclose()
        return {oid: (r.provider, r.upstream_id or "") for oid, r in records.items()}

    return asyncio.run(read())


def _status(env: Env) -> Prepared:
    oid = _gateway_add(env, 1)
    direct = env.main.add(link(2))
    return Prepared(((1, form(CLIENT_KEY, action="status", order=oid)),),
                    ((1, form(UPSTREAM_KEY, action="status", order=direct)),))


def _multi_status(env: Env) -> Prepared:
    ids = [_gateway_add(env, i, PER_PROVIDER_SERVICES[PROVIDERS[i % len(PROVIDERS)]])
           for i in range(MULTI_ORDERS)]
    direct = [env.main.add(link(1000 + i)) for i in range(MULTI_ORDERS)]
    return Prepared(((1, form(CLIENT_KEY, action="status", orders=",".join(map(str, ids)))),),
                    ((1, form(UPSTREAM_KEY, action="status",
                              orders=",".join(map(str, direct)))),))


def _add(env: Env) -> Prepared:
    return Prepared(((1, form(CLIENT_KEY, **add_fields(1, MAIN_SERVICE))),),
                    ((1, form(UPSTREAM_KEY, **add_fields(1, 1))),))


def _refill(env: Env) -> Prepared:
    oid = _gateway_add(env, 1)
    _, upstream = upstream_ids(env.redis_url, [oid])[oid]
    env.main.force(upstream, "Completed")
    direct = env.main.add(link(2))
    env.main.force(direct, "Completed")
    return Prepared(((1, form(CLIENT_KEY, action="refill", order=oid)),),
                    ((1, form(UPSTREAM_KEY, action="refill", order=direct)),))


def _simple(action: str) -> Callable[[Env], Prepared]:
    def prepare(env: Env) -> Prepared:
        return Prepared(((1, form(CLIENT_KEY, action=action)),),
                        ((1, form(UPSTREAM_KEY, action=action)),))
    return prepare


def _mixed(env: Env) -> Prepared:
    ids = [_gateway_add(env, i) for i in range(MIXED_ORDERS)]
    direct = [env.main.add(link(1000 + i)) for i in range(MIXED_ORDERS)]
    # weights out of 1000: 900 status (spread over the orders), 80 add, 20 services
    each = 900 // MIXED_ORDERS

    def mix(key: str, orders: Sequence[int], service: int) -> Bodies:
        return (*((each, form(key, action="status", order=o)) for o in orders),
                (80, form(key, **add_fields(1, service))),
                (20, form(key, action="services")))

    return Prepared(mix(CLIENT_KEY, ids, MAIN_SERVICE), mix(UPSTREAM_KEY, direct, 1))


PREPARE: dict[str, Callable[[Env], Prepared]] = {
    "services": _simple("services"),
    "status": _status,
    "status_cached": _status,
    "multi_status": _multi_status,
    "add": _add,
    "refill": _refill,
    "balance": _simple("balance"),
    "mixed": _mixed,
}


def prepare(name: str, env: Env, latency_ms: float) -> Prepared:
    """Reset the simulators, make the scenario's fixtures, then set the upstream latency."""
    osstat.wait_idle(env.gateway.pid)
    for sim in env.sims.values():
        sim.reset(0)
    prepared = PREPARE[name](env)
    for sim in env.sims.values():
        sim.control("latency", {"ms": latency_ms})
    return prepared


def upstream_calls_of_one(env: Env, body: str) -> dict[str, int]:
    """Send one gateway request; how many upstream requests each simulator received."""
    before = {name: sim.total() for name, sim in env.sims.items()}
    r = env.http.post(env.gateway.api, content=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    r.raise_for_status()
    return {name: sim.total() - before[name] for name, sim in env.sims.items()}
