"""What is really there after the run: the providers' books, the gateway's order
records and ledger in Redis, and what the operator commands say.

Records are read straight from Redis in the gateway's own format (msgpack
`OrderRecord`s in the bucket hashes of `gateway.state.keys`), every id from the
first one to the counter; the ledger from its stream. `orders unknown` and `keys
check` are run as the operator would run them (`python -m gateway ...` with
REDIS_URL), so the operator's view is checked too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import redis
from redis.sentinel import Sentinel

from chaos.procs import ROOT, Sim
from gateway.models import OrderRecord
from gateway.money import from_units
from gateway.state import keys

CLUSTER_SCHEME = "redis+cluster://"
SENTINEL_SCHEME = "redis+sentinel://"
_decode = msgspec.msgpack.Decoder(OrderRecord).decode


@dataclass(frozen=True)
class Upstream:
    provider: str
    id: str
    link: str
    status: str


@dataclass(frozen=True)
class LedgerEntry:
    type: str
    amount: Decimal
    order: int | None
    note: str


@dataclass
class Truth:
    upstream: list[Upstream]
    records: dict[int, OrderRecord]
    unknown_listed: set[int]  # ids `smm-gateway orders unknown` prints
    unknown_output: str
    keys_check_rc: int
    keys_check_output: str
    ledger: list[LedgerEntry]
    balance: Decimal
    pending: dict[int, int] = field(default_factory=dict)  # order -> reserved at (ms)



def sync_redis(url: str) -> Any:
    if url.startswith(CLUSTER_SCHEME):
        return redis.RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME):])
    if url.startswith(SENTINEL_SCHEME):  # redis+sentinel://host:port[,host:port]/service
        hosts, _, service = url[len(SENTINEL_SCHEME):].partition("/")
        sentinels = [(h.rpartition(":")[0], int(h.rpartition(":")[2]))
                     for h in hosts.split(",")]
        manager = Sentinel(sentinels, socket_timeout=5)  # type: ignore[no-untyped-call]
        return manager.master_for(service.split("/")[0])  # type: ignore[no-untyped-call]
    return redis.Redis.from_url(url)


def read_records(r: Any, first_id: int) -> dict[int, OrderRecord]:
    last = int(r.get(keys.ORDER_SEQ) or 0)
    buckets: dict[str, list[int]] = defaultdict(list)
    for oid in range(first_id, last + 1):
        buckets[keys.order_bucket(oid)].append(oid)
    cluster = isinstance(r, redis.RedisCluster)
    pipe = r.pipeline() if cluster else r.pipeline(transaction=False)
    for name, ids in buckets.items():
        pipe.hmget(name, [str(i) for i in ids])
    records: dict[int, OrderRecord] = {}
    for ids, values in zip(buckets.values(), pipe.execute() if buckets else [], strict=True):
        for oid, raw in zip(ids, values, strict=True):
            if raw is not None:
                records[oid] = _decode(raw)
    return records


def record_ids(url: str, first_id: int) -> dict[str, list[int]]:
    """Every order id that has a record, by client."""
    r = sync_redis(url)
    try:
        records = read_records(r, first_id)
    finally:
        r.close()
    out: dict[str, list[int]] = defaultdict(list)
    for oid, rec in sorted(records.items()):
        out[rec.client].append(oid)
    return dict(out)


def read_ledger(r: Any, client: str) -> tuple[list[LedgerEntry], Decimal, dict[int, int]]:
    entries = []
    for _, raw in r.xrange(keys.client_ledger(client)):
        f = {k.decode(): v.decode() for k, v in raw.items()}
        order = f.get("order", "")
        entries.append(LedgerEntry(f["type"], from_units(f["amount"]),
                                   int(order) if order.isdigit() else None, f.get("note", "")))
    balance = from_units(r.get(keys.client_balance(client)) or 0)
    pending: dict[int, int] = {}
    pending_key = getattr(keys, "client_pending", None)  # the reconciler's marks, if any
    if pending_key is not None:
        for oid, value in r.hgetall(pending_key(client)).items():
            pending[int(oid)] = int(value.decode().split(":")[0])
    return entries, balance, pending


def upstream_orders(sims: dict[str, Sim]) -> list[Upstream]:
    return [Upstream(provider, str(o["order"]), str(o["link"]), str(o["status"]))
            for provider, sim in sims.items() for o in sim.orders()]


def read_truth(redis_url: str, sims: dict[str, Sim], ledger_client: str,
               first_id: int) -> Truth:
    procs = [subprocess.Popen([sys.executable, "-m", "gateway", *args], cwd=ROOT,
                              env={**os.environ, "REDIS_URL": redis_url}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for args in (("orders", "unknown"), ("keys", "check"))]
    upstream = upstream_orders(sims)
    r = sync_redis(redis_url)
    try:
        records = read_records(r, first_id)
        ledger, balance, pending = read_ledger(r, ledger_client)
    finally:
        r.close()
    (unknown_out, _), (check_out, _) = (p.communicate(timeout=120) for p in procs)
    listed = {int(line.split()[0]) for line in unknown_out.splitlines()
              if line.split() and line.split()[0].isdigit()}
    return Truth(upstream=upstream, records=records, unknown_listed=listed,
                 unknown_output=unknown_out, keys_check_rc=procs[1].returncode,
                 keys_check_output=check_out, ledger=ledger, balance=balance,
                 pending=pending)
