"""The fault schedule, played while the load runs.

One cycle, each step after the other (the load never stops):

    slow provider (latency)        kill -9 a replica, restart it
    HTML error pages               SIGTERM redis-server, restart it
    plain 500s                     hangs (past the gateway's provider timeout)
    SIGKILL redis-server and kill -9 a replica while it is down; restart both
    dropped connections            answers after the provider timeout (the
                                   order exists upstream, the gateway gave up)
    kill -9 the other replica      top-up of the prepaid client

Against a Redis Cluster (`--cluster`) the Redis steps kill a master and wait for
its replica to take over (then restart the killed node as a replica); against an
external Redis (`--redis-url`) they are skipped. Every step is logged with its
start and end (seconds since the load began).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chaos.config import Plan
from chaos.procs import RedisServer, Replica, Sim


@dataclass
class Targets:
    redis: RedisServer | None  # ours to kill (None: external or cluster)
    cluster: Any  # gateway.state.local_cluster.LocalCluster, or None
    sims: list[Sim]
    replicas: list[Replica]
    topup: Callable[[Decimal], Awaitable[bool]]


class Faults:
    def __init__(self, targets: Targets, plan: Plan, t0: float) -> None:
        self.t = targets
        self.plan = plan
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self.topped_up = Decimal(0)

    async def run(self) -> None:
        for cycle in range(self.plan.cycles):
            for name, step in self._cycle(cycle):
                began = time.monotonic() - self.t0
                note = await step()
                self.log.append({"cycle": cycle, "step": name, "start_s": round(began, 2),
                                 "end_s": round(time.monotonic() - self.t0, 2),
                                 "note": note or ""})

    def _cycle(self, c: int) -> list[tuple[str, Callable[[], Awaitable[str | None]]]]:
        a, b = self.t.sims[0], self.t.sims[1]
        n = len(self.t.replicas)
        late_ms = self.plan.provider_timeout_s * 1000 + 300
        return [
            (f"{a.name} latency 300 ms", lambda: self._latency(a, 300)),
            (f"kill -9 replica-{c % n}", lambda: self._kill_replica(c % n)),
            (f"{b.name} html 50%", lambda: self._upstream(b, "html", 0.5)),
            ("SIGTERM redis-server", lambda: self._redis(signal.SIGTERM, None)),
            (f"{a.name} 500 50%", lambda: self._upstream(a, "500", 0.5)),
            (f"{b.name} hang 30%", lambda: self._upstream(b, "hang", 0.3)),
            (f"SIGKILL redis-server + kill -9 replica-{(c + 1) % n}",
             lambda: self._redis(signal.SIGKILL, (c + 1) % n)),
            (f"{a.name} drop 40%", lambda: self._upstream(a, "drop", 0.4)),
            (f"{b.name} answers after the timeout ({late_ms:.0f} ms)",
             lambda: self._latency(b, late_ms)),
            (f"kill -9 replica-{(c + 1) % n}", lambda: self._kill_replica((c + 1) % n)),
            ("top-up", self._topup),
        ]

    # --- upstream ------------------------------------------------------------------

    async def _upstream(self, sim: Sim, fault: str, rate: float) -> None:
        await asyncio.to_thread(sim.control, "fault", {"fault": fault, "rate": rate})
        await asyncio.sleep(self.plan.step_s)
        await asyncio.to_thread(sim.control, "fault", {"fault": None})

    async def _latency(self, sim: Sim, ms: float) -> None:
        await asyncio.to_thread(sim.control, "latency", {"ms": ms})
        await asyncio.sleep(max(self.plan.step_s, ms / 1000))
        await asyncio.to_thread(sim.control, "latency", {"ms": 0})

    # --- processes -----------------------------------------------------------------

    async def _kill_replica(self, i: int) -> None:
        replica = self.t.replicas[i]
        await asyncio.to_thread(replica.signal, signal.SIGKILL)
        await asyncio.sleep(self.plan.down_s)
        await asyncio.to_thread(self._start_replica, replica)

    @staticmethod
    def _start_replica(replica: Replica) -> None:
        replica.start()
        replica.wait_ok("/healthz")

    async def _redis(self, signum: int, also_kill: int | None) -> str | None:
        if self.t.cluster is not None:
            return await asyncio.to_thread(self._fail_over)
        server = self.t.redis
        if server is None:
            return "skipped: external Redis"
        await asyncio.to_thread(server.signal, signum)
        victim = self.t.replicas[also_kill] if also_kill is not None else None
        if victim is not None:
            await asyncio.sleep(self.plan.down_s / 2)
            await asyncio.to_thread(victim.signal, signal.SIGKILL)
        await asyncio.sleep(self.plan.down_s)
        await asyncio.to_thread(server.start)
        if victim is not None:
            await asyncio.to_thread(self._start_replica, victim)
        return None

    def _fail_over(self) -> str:
        cluster = self.t.cluster
        killed = cluster.kill_master(0)
        took = cluster.wait_failover()
        cluster.restart_node(killed)
        return f"cluster: killed master node {killed}, failover took {took:.1f}s"

    async def _topup(self) -> str:
        amount = self.plan.credit
        if await self.t.topup(amount):
            self.topped_up += amount
            return f"+{amount}"
        return "top-up failed (not counted)"
