"""One chaos run: start everything, load + faults, settle, read the truth, count.

Settling, in order: every fault is cleared; every replica is restarted once (so
whatever a replica kept locally is replayed at start) and must answer /readyz;
`plan.settle_s` of quiet; keyed panels retry what they never got a final answer
for; then every order record is polled with `status` (final statuses, refunds)
before the truth is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from chaos import config
from chaos.config import LEDGER_CLIENT, ORDER_ID_START, Plan
from chaos.faults import Faults, Targets
from chaos.load import Load
from chaos.procs import (
    STOP_TIMEOUT_S,
    HttpProcess,
    RedisServer,
    Replica,
    Sim,
    log_kinds,
    log_lines_for,
    stop_together,
)
from chaos.reconcile import Findings, reconcile
from chaos.topology import Replicated, Sentineled
from chaos.truth import read_truth, record_ids, sync_redis


@dataclass(frozen=True)
class Where:
    """Which Redis: our own redis-server (the default), an external URL, or a local
    Redis Cluster."""

    redis_url: str | None = None
    cluster: bool = False
    replicated: bool = False  # a master and a replica behind one address (lossy failover)
    sentinel: bool = False  # a master and a replica watched by Redis Sentinel


def reconciler_grace_s() -> float:
    """How long the gateway leaves a reservation alone before its reconciler may
    release it (0 when this gateway has no reconciler)."""
    try:
        from gateway.state import recovery
    except ImportError:
        return 0.0
    return float(getattr(recovery, "PENDING_GRACE_S", 0.0))


def open_redis(stack: contextlib.ExitStack, where: Where,
               work: Path) -> tuple[str, RedisServer | None, Any]:
    """The URL, our own redis-server, a local cluster or a replicated pair (the
    third: a LocalCluster, a Replicated or a Sentineled, or None)."""
    if where.replicated or where.sentinel:
        pair = (Sentineled if where.sentinel else Replicated)(work / "pair")
        stack.callback(pair.stop)
        flush(pair.url)
        return pair.url, None, pair
    if where.cluster:
        try:
            from gateway.state.local_cluster import LocalCluster
        except ImportError as exc:
            raise SystemExit("--cluster needs gateway/state/local_cluster.py") from exc
        cluster = LocalCluster(work / "cluster")
        url = str(cluster.start())
        stack.callback(cluster.stop)
        flush(url)
        return url, None, cluster
    if where.redis_url:
        flush(where.redis_url)
        return where.redis_url, None, None
    server = RedisServer(work / "redis", work)
    server.start()
    stack.callback(server.stop)
    return server.url, server, None


def flush(url: str) -> None:
    """A run starts on an empty database (its ids and ledger are all it counts)."""
    r = sync_redis(url)
    try:
        r.flushall() if url.startswith("redis+cluster://") else r.flushdb()
    finally:
        r.close()


def start_all(stack: contextlib.ExitStack, procs: Sequence[HttpProcess], ready: str,
              drain_s: float = STOP_TIMEOUT_S) -> None:
    stack.callback(stop_together, procs, drain_s)
    for p in procs:
        p.start()
    for p in procs:
        p.wait_ok(ready)


async def topup(redis_url: str, amount: Decimal, note: str) -> bool:
    """`smm-gateway keys topup` (its code, in this process); False if it failed."""
    from gateway.errors import StoreUnavailable
    from gateway.ops.admin import AdminError, keys_topup
    from gateway.state.connect import connect

    r = connect(redis_url)
    try:
        await keys_topup(r, LEDGER_CLIENT, amount, note)
        return True
    except (StoreUnavailable, AdminError):  # the step says so; nothing is counted
        return False
    finally:
        await r.aclose()


def run_once(plan: Plan, where: Where, work: Path, index: int) -> dict[str, Any]:
    began = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        url, server, other = open_redis(stack, where, work)
        pair = other if isinstance(other, Replicated | Sentineled) else None
        cluster = None if pair is not None else other
        sims = {"prov-a": Sim("prov-a", "toksmm", plan.progress_s, plan.latency_ms, work),
                "prov-b": Sim("prov-b", "testedsmm", plan.progress_s, plan.latency_ms, work,
                              config.CATALOG_B)}
        start_all(stack, list(sims.values()), "/_sim/health")
        cfg = work / "gateway.yaml"
        cfg.write_text(yaml.safe_dump(config.gateway_config(
            {name: sim.api for name, sim in sims.items()}, plan), sort_keys=False))
        replicas = [Replica(i, cfg, url, work, plan.serve_workers)
                    for i in range(plan.replicas)]
        start_all(stack, replicas, "/readyz", plan.drain_s)
        started = time.monotonic() - began
        load = Load([r.api for r in replicas], plan, f"r{index}-{int(time.time())}", index)
        targets = Targets(server, cluster, list(sims.values()), replicas,
                          lambda amount: topup(url, amount, "chaos top-up"), pair=pair,
                          pause=load.pause, resume=load.resume, probe=load.probe)
        findings, extra = asyncio.run(_drive(plan, url, sims, targets, load))
    logs = [r.log_path for r in replicas]
    findings.observations["log_problems"] = {
        r.name: dict(sorted(log_kinds(r.log_path).items(), key=lambda kv: -kv[1])[:8])
        for r in replicas}
    _attach_log_lines(findings, logs)
    return {"run": index, "seconds": round(time.monotonic() - began, 1),
            "startup_s": round(started, 1), "redis": _describe(where), "work_dir": str(work),
            "counts": findings.counts, "examples": findings.examples,
            "observations": findings.observations, **extra}


async def _drive(plan: Plan, url: str, sims: dict[str, Sim], targets: Targets,
                 load: Load) -> tuple[Findings, dict[str, Any]]:
    initial = plan.credit
    topped_up = initial if await topup(url, initial, "chaos: first top-up") else Decimal(0)
    faults = Faults(targets, plan, load.t0)
    stop = asyncio.Event()
    traffic = asyncio.create_task(load.run(stop))
    try:
        await faults.run()
        await asyncio.sleep(plan.tail_s)
    finally:
        stop.set()
        # what a provider timeout explains may finish; longer waits are hung up on
        await asyncio.wait({traffic}, timeout=plan.provider_timeout_s + 0.5)
        load.abandon()
        await traffic
    load_s = time.monotonic() - load.t0
    settle_began = time.monotonic()
    for sim in sims.values():
        await asyncio.to_thread(sim.calm)
    drained = await asyncio.gather(*(asyncio.to_thread(r.restart, plan.drain_s)
                                     for r in targets.replicas))
    await asyncio.sleep(plan.settle_s)
    still_open = await load.retry_keyed()
    statuses = await load.poll_all(await asyncio.to_thread(record_ids, url, ORDER_ID_START))
    truth = await asyncio.to_thread(read_truth, url, sims, LEDGER_CLIENT, ORDER_ID_START)
    await load.aclose()
    findings = reconcile(load.orders, truth, statuses, topped_up + faults.topped_up,
                         LEDGER_CLIENT, reconciler_grace_s(), load.lost)
    refused = faults.refused_after_idle_restart
    findings.counts["refused_after_idle_restart"] = len(refused)
    if refused:
        findings.examples["refused_after_idle_restart"] = refused[:8]
    findings.observations["keyed_orders_open_after_retries"] = still_open
    findings.observations["replicas_killed_at_the_final_restart"] = [
        r.name for r, ok in zip(targets.replicas, drained, strict=True) if not ok]
    findings.observations["requests"] = dict(sorted(load.requests.items()))
    return findings, {"load_s": round(load_s, 1), "t0_unix": round(load.t0_wall, 3),
                      "settle_s": round(time.monotonic() - settle_began, 1),
                      "topped_up": str(topped_up + faults.topped_up), "faults": faults.log,
                      "unknown_listing": truth.unknown_output.splitlines()[:12],
                      "keys_check": truth.keys_check_output}


def _attach_log_lines(f: Findings, logs: list[Path]) -> None:
    """Each example that names an order id gets the log lines that name it."""
    wanted = {int(e["order"]) for shown in f.examples.values() for e in shown
              if isinstance(e.get("order"), int)}
    wanted |= {i for shown in f.examples.values() for e in shown
               for i in e.get("records", {}) if isinstance(i, int)}
    found = log_lines_for(logs, wanted)
    for shown in f.examples.values():
        for e in shown:
            ids = [e["order"]] if isinstance(e.get("order"), int) else list(e.get("records", {}))
            lines = [line for i in ids for line in found.get(i, [])]
            if lines:
                e["log"] = lines[:4]


def _describe(where: Where) -> str:
    if where.sentinel:
        return "master + replica + Redis Sentinel (ours: SIGKILL the master, promotion)"
    if where.replicated:
        return "master + replica behind one address (ours: lossy failovers)"
    if where.cluster:
        return "local Redis Cluster (3 masters + 3 replicas)"
    return where.redis_url or "redis-server (ours: SIGTERM/SIGKILL + restart)"
